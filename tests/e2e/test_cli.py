"""The command line: generate and tokenize, as a user runs them."""
import json


def stories(fixtures):
    return fixtures / "stories260K-hf"


def test_generate_ids_match_reference(run, fixtures):
    expected = json.loads((stories(fixtures) / "expected_ids.json").read_text())["ids"]
    r = run("generate", "--model", stories(fixtures), "--prompt", "", "--max-tokens", 200,
            "--temperature", 0, "--ids")
    assert r.returncode == 0, r.stderr
    assert [int(t) for t in r.stdout.split()] == expected


def test_generate_text_matches_llama2c(run, fixtures):
    published = (stories(fixtures) / "expected.txt").read_text()
    r = run("generate", "--model", stories(fixtures), "--prompt", "", "--max-tokens", 114)
    assert r.returncode == 0, r.stderr
    text = r.stdout[:-1]  # the command ends its output with a newline
    assert len(text) > 250 and published.startswith(text)


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
