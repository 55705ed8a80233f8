"""The command line: generate, tokenize, synth-model and synth-adapter, as a user runs them."""
import json
import os
import subprocess

import pytest


def stories(fixtures):
    return fixtures / "stories260K-hf"


def test_generate_ids_match_reference(run, fixtures):
    """fp32 weights reproduce the independent fp32 reference's 200 greedy ids exactly."""
    expected = json.loads((stories(fixtures) / "expected_ids.json").read_text())["ids"]
    r = run("generate", "--model", stories(fixtures), "--prompt", "", "--max-tokens", 200,
            "--temperature", 0, "--ids", "--weights", "f32")
    assert r.returncode == 0, r.stderr
    assert [int(t) for t in r.stdout.split()] == expected


def test_generate_bf16_default_follows_reference_to_a_near_tie(run, fixtures):
    """The default bf16 weights keep the fp32 reference's greedy ids until a near tie (71
    tokens with the avx512-bf16 outer-product kernel, 132 on the paths that keep fp32
    activations; test_stories260k.c checks that the parting is a flipped near tie and that
    every logit row stays within 3 % of fp32), and the same ids on one thread or two."""
    expected = json.loads((stories(fixtures) / "expected_ids.json").read_text())["ids"]
    ids = {}
    for threads in (1, 2):
        r = run("generate", "--model", stories(fixtures), "--prompt", "", "--max-tokens", 200,
                "--temperature", 0, "--ids", "--threads", threads)
        assert r.returncode == 0, r.stderr
        ids[threads] = [int(t) for t in r.stdout.split()]
    assert ids[1] == ids[2]
    assert ids[1][:60] == expected[:60]


def test_generate_int8_weights_run(run, fixtures):
    r = run("generate", "--model", stories(fixtures), "--prompt", "", "--max-tokens", 40,
            "--temperature", 0, "--ids", "--weights", "int8")
    assert r.returncode == 0, r.stderr
    ids = [int(t) for t in r.stdout.split()]
    assert len(ids) == 40


@pytest.mark.parametrize("flag,value,msg", [
    ("--weights", "fp16", "--weights: expected f32, bf16 or int8"),
    ("--adapter-dtype", "int8", "--adapter-dtype: expected bf16 or fp32"),
    ("--threads", "-1", "--threads"),
])
def test_generate_bad_compute_flags(run, fixtures, flag, value, msg):
    r = run("generate", "--model", stories(fixtures), "--prompt", "", flag, value)
    assert r.returncode == 2 and msg in r.stderr, r.stderr


def test_generate_text_matches_llama2c(run, fixtures):
    """llama2.c computes in fp32: --weights f32 reproduces its published text exactly; the
    default bf16 weights share its first sentences (they part at a near tie, as above)."""
    published = (stories(fixtures) / "expected.txt").read_text()
    r = run("generate", "--model", stories(fixtures), "--prompt", "", "--max-tokens", 114,
            "--weights", "f32")
    assert r.returncode == 0, r.stderr
    text = r.stdout[:-1]  # the command ends its output with a newline
    assert len(text) > 250 and published.startswith(text)
    r = run("generate", "--model", stories(fixtures), "--prompt", "", "--max-tokens", 114)
    assert r.returncode == 0, r.stderr
    assert os.path.commonprefix([published, r.stdout]).count(".") >= 3


def test_generate_default_is_greedy_per_generation_config(run, fixtures):
    # generation_config.json says do_sample false: two runs without a seed agree
    a = run("generate", "--model", stories(fixtures), "--prompt", "Once", "--max-tokens", 30)
    b = run("generate", "--model", stories(fixtures), "--prompt", "Once", "--max-tokens", 30)
    assert a.returncode == 0 and a.stdout == b.stdout and a.stdout.strip()


def test_generate_seeded_sampling_repeats(run, fixtures):
    args = ("generate", "--model", stories(fixtures), "--prompt", "Lily", "--max-tokens", 40,
            "--temperature", 1.0, "--ids")
    a = run(*args, "--seed", 5)
    b = run(*args, "--seed", 5)
    c = run(*args, "--seed", 6)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout


def test_generate_stop_string(run, fixtures):
    r = run("generate", "--model", stories(fixtures), "--prompt", "", "--max-tokens", 100,
            "--temperature", 0, "--stop", "Lily")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Once upon a time, there was a little girl named \n"


def test_tokenize_needs_only_tokenizer_files(run, fixtures):
    # gpt2-tokenizer-json has no weights at all
    r = run("tokenize", "--model", fixtures / "gpt2-tokenizer-json", "--text", "Hello world")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["15496", "995"]


def test_tokenize_adds_bos(run, fixtures):
    r = run("tokenize", "--model", fixtures / "tinyllama-tokenizer-json", "--text", "Hello world")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "15043", "3186"]
    r = run("tokenize", "--model", fixtures / "tinyllama-tokenizer-json", "--text",
            "Hello world", "--no-special")
    assert r.stdout.split() == ["15043", "3186"]


def test_help(run):
    for args in (["--help"], ["generate", "--help"], ["tokenize", "--help"]):
        r = run(*args)
        assert r.returncode == 0 and "usage: loramux" in r.stdout


def test_bad_usage(run, fixtures):
    r = run("generate", "--model", stories(fixtures))
    assert r.returncode == 2 and "usage" in r.stderr
    r = run("generate", "--model", stories(fixtures), "--prompt", "x", "--temperature", "hot")
    assert r.returncode == 2 and "--temperature" in r.stderr
    r = run("frobnicate")
    assert r.returncode == 2 and "unknown command" in r.stderr


def test_missing_model_is_a_clear_error(run, tmp_path):
    r = run("generate", "--model", tmp_path / "nope", "--prompt", "x")
    assert r.returncode == 1
    assert "config.json" in r.stderr


def test_unknown_config_key_refused(run, fixtures, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    for f in stories(fixtures).iterdir():
        (d / f.name).symlink_to(f)
    (d / "config.json").unlink()
    cfg = json.loads((stories(fixtures) / "config.json").read_text())
    cfg["sliding_window_pattern"] = 4
    (d / "config.json").write_text(json.dumps(cfg))
    r = run("generate", "--model", d, "--prompt", "x")
    assert r.returncode == 1
    assert "sliding_window_pattern" in r.stderr


def test_readme_configuration_table_is_current(run):
    """The README's configuration table is the one the binary generates from its settings."""
    import pathlib
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    r = run("config-table")
    assert r.returncode == 0 and r.stdout.startswith("| setting |")
    assert r.stdout in readme, "README's configuration table is stale: paste `loramux config-table`"


def test_serve_help_lists_every_setting(run):
    r = run("serve", "--help")
    assert r.returncode == 0
    table = run("config-table").stdout
    flags = [line.split("`")[3].split()[0] for line in table.splitlines()[2:] if line.count("`") >= 4]
    assert len(flags) > 20
    for flag in flags:  # booleans are shown as --[no-]name
        assert flag in r.stdout or flag.replace("--", "--[no-]") in r.stdout, flag


# ---- synth-model / synth-adapter ----

SMOLLM_TOK = "smollm-135m-instruct-lora-qv-r16"
METHODS = ("lora", "rslora", "dora", "mora", "lorma", "lora2")


def synth(binary, *args, env=None):
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=env)


def gen_ids(run, model, *extra, n=16):
    r = run("generate", "--model", model, "--prompt", "Hello there", "--max-tokens", n,
            "--temperature", 0, "--ignore-eos", "--ids", *extra)
    assert r.returncode == 0, r.stderr
    ids = [int(t) for t in r.stdout.split()]
    assert len(ids) == n
    return ids


@pytest.fixture(scope="module")
def tiny(binary, fixtures, tmp_path_factory):
    """A tiny synthetic model with SmolLM's tokenizer, written by `loramux synth-model`."""
    d = tmp_path_factory.mktemp("synth") / "tiny"
    r = synth(binary, "synth-model", "--shape", "tiny", "--out", d, "--tokenizer-from",
              fixtures / SMOLLM_TOK, "--seed", 7)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(d)
    return d


def test_synth_model_writes_a_loadable_directory(run, tiny, fixtures):
    names = {p.name for p in tiny.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json"} <= names
    cfg = json.loads((tiny / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_key_value_heads"]) == (64, 2, 2)
    assert cfg["vocab_size"] == 49152  # sized to the tokenizer
    gen = json.loads((tiny / "generation_config.json").read_text())
    assert gen["bos_token_id"] == cfg["bos_token_id"] and gen["eos_token_id"] == cfg["eos_token_id"]
    assert (tiny / "tokenizer.json").read_bytes() == \
        (fixtures / SMOLLM_TOK / "tokenizer.json").read_bytes()
    a = gen_ids(run, tiny)
    assert a == gen_ids(run, tiny)  # greedy: the same ids again


def test_synth_model_is_deterministic_per_seed(binary, tiny, fixtures, tmp_path):
    same, other = tmp_path / "same", tmp_path / "other"
    tok = fixtures / SMOLLM_TOK
    assert synth(binary, "synth-model", "--out", same, "--tokenizer-from", tok,
                 "--seed", 7).returncode == 0
    assert synth(binary, "synth-model", "--out", other, "--tokenizer-from", tok,
                 "--seed", 8).returncode == 0
    w = (tiny / "model.safetensors").read_bytes()
    assert (same / "model.safetensors").read_bytes() == w
    assert (other / "model.safetensors").read_bytes() != w


def test_synth_model_bf16_halves_the_weights(binary, run, tiny, fixtures, tmp_path):
    d = tmp_path / "bf16"
    r = synth(binary, "synth-model", "--out", d, "--tokenizer-from", fixtures / SMOLLM_TOK,
              "--seed", 7, "--dtype", "bf16")
    assert r.returncode == 0, r.stderr
    assert json.loads((d / "config.json").read_text())["torch_dtype"] == "bfloat16"
    f32 = (tiny / "model.safetensors").stat().st_size
    bf16 = (d / "model.safetensors").stat().st_size
    assert abs(bf16 - f32 / 2) < 4096, (f32, bf16)  # the headers differ a little
    gen_ids(run, d)


def test_synth_model_real_shape_takes_the_fixture_tokenizer(binary, run, fixtures, tmp_path):
    """smollm-135m without --tokenizer-from: SmolLM's tokenizer from $LORAMUX_FIXTURES."""
    d = tmp_path / "smollm"
    env = dict(os.environ, LORAMUX_FIXTURES=str(fixtures))
    r = synth(binary, "synth-model", "--shape", "smollm-135m", "--dtype", "bf16", "--out", d,
              env=env)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((d / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
            cfg["vocab_size"], cfg["tie_word_embeddings"]) == (576, 30, 9, 49152, True)
    assert (d / "tokenizer.json").read_bytes() == \
        (fixtures / SMOLLM_TOK / "tokenizer.json").read_bytes()
    size = (d / "model.safetensors").stat().st_size
    assert 265e6 < size < 275e6, size  # 134.5 M parameters in bf16
    gen_ids(run, d, n=4)


def test_synth_model_without_a_tokenizer_is_a_clear_error(binary, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LORAMUX_FIXTURES"}
    r = synth(binary, "synth-model", "--shape", "tinyllama-1.1b", "--out", tmp_path / "x",
              env=env)
    assert r.returncode == 2
    assert "--tokenizer-from" in r.stderr and "LORAMUX_FIXTURES" in r.stderr
    r = synth(binary, "synth-model", "--shape", "tiny", "--out", tmp_path / "x", env=env)
    assert r.returncode == 2 and "--tokenizer-from" in r.stderr
    assert not (tmp_path / "x").exists()  # nothing written
    # --no-tokenizer: weights and configs only
    r = synth(binary, "synth-model", "--no-tokenizer", "--out", tmp_path / "w", env=env)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == \
        ["config.json", "generation_config.json", "model.safetensors"]


@pytest.mark.parametrize("method", METHODS)
def test_synth_adapter_is_accepted_by_generate(binary, run, tiny, tmp_path, method):
    d = tmp_path / method
    r = synth(binary, "synth-adapter", "--base", tiny, "--out", d, "--method", method,
              "--rank", 4, "--targets", "all", "--seed", 3)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((d / "adapter_config.json").read_text())
    assert (d / "adapter_model.safetensors").stat().st_size > 0
    if method in ("lora", "rslora", "dora"):
        assert cfg["r"] == 4
    with_adapter = gen_ids(run, tiny, "--adapter", d)
    if method == "lora":
        assert with_adapter != gen_ids(run, tiny)


def test_synth_adapter_zero_is_a_no_op(binary, run, tiny, tmp_path):
    d = tmp_path / "zero"
    r = synth(binary, "synth-adapter", "--base", tiny, "--out", d, "--rank", 8, "--targets",
              "q_proj,v,down", "--zero", "--dtype", "bf16", "--base-name", "synthetic/tiny")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((d / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "synthetic/tiny"
    assert sorted(cfg["target_modules"]) == ["down_proj", "q_proj", "v_proj"]
    assert gen_ids(run, tiny, "--adapter", d) == gen_ids(run, tiny)


@pytest.mark.parametrize("args, needle", [
    (["synth-model", "--out", "{t}/m", "--shape", "gpt5"], "--shape"),
    (["synth-model", "--out", "{t}/m", "--dtype", "f8", "--no-tokenizer"], "--dtype"),
    (["synth-model", "--out", "{t}/m", "--seed", "x", "--no-tokenizer"], "--seed"),
    (["synth-model", "--out", "{t}/m", "--vocab", "0", "--no-tokenizer"], "--vocab"),
    (["synth-model", "--out", "{t}/m", "--vocab", "100", "--tokenizer-from", "{tok}"], "--vocab"),
    (["synth-model", "--shape", "tiny", "--no-tokenizer"], "--out"),
    (["synth-model", "--out", "{t}/m", "--frobnicate"], "--frobnicate"),
    (["synth-model", "--out"], "--out"),
    (["synth-model", "--out", "{t}/m", "stray"], "stray"),
    (["synth-adapter", "--out", "{t}/a"], "--base"),
    (["synth-adapter", "--base", "{base}"], "--out"),
    (["synth-adapter", "--base", "{base}", "--out", "{t}/a", "--method", "qlora"], "--method"),
    (["synth-adapter", "--base", "{base}", "--out", "{t}/a", "--rank", "-2"], "--rank"),
    (["synth-adapter", "--base", "{base}", "--out", "{t}/a", "--targets", "q,x"], "--targets"),
    (["synth-adapter", "--base", "{base}", "--out", "{t}/a", "--mora-type", "5"], "--mora-type"),
    (["synth-adapter", "--base", "{base}", "--out", "{t}/a", "--lorma", "mid"], "--lorma"),
    (["synth-adapter", "--base", "{base}", "--out", "{t}/a", "--inflation", "x"], "--inflation"),
    (["synth-adapter", "--base", "{base}", "--out", "{t}/a", "--alpha", "-1"], "--alpha"),
    (["synth-adapter", "--base", "{base}", "--out", "{t}/a", "--dtype", "i8"], "--dtype"),
])
def test_synth_bad_arguments(run, tiny, fixtures, tmp_path, args, needle):
    sub = {"t": tmp_path, "base": tiny, "tok": fixtures / SMOLLM_TOK}
    r = run(*[a.format(**sub) for a in args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    assert not (tmp_path / "m").exists() and not (tmp_path / "a").exists()


def test_synth_adapter_missing_base_model(run, tmp_path):
    r = run("synth-adapter", "--base", tmp_path / "nope", "--out", tmp_path / "a")
    assert r.returncode == 1 and "config.json" in r.stderr


def test_synth_help(run):
    r = run("--help")
    assert r.returncode == 0 and "synth-model" in r.stdout and "synth-adapter" in r.stdout
    for cmd in ("synth-model", "synth-adapter"):
        r = run(cmd, "--help")
        assert r.returncode == 0 and f"usage: loramux {cmd}" in r.stdout
        assert "--out" in r.stdout and "--seed" in r.stdout and "--dtype" in r.stdout
    r = run("synth-model", "--help")
    for opt in ("--shape", "--tokenizer-from", "--vocab", "smollm-135m", "tinyllama-1.1b", "tiny"):
        assert opt in r.stdout, opt
    r = run("synth-adapter", "--help")
    for opt in ("--base", "--method", "--rank", "--targets", "--mora-type", "--lorma",
                "--inflation", "--zero", "--base-name", *METHODS):
        assert opt in r.stdout, opt
