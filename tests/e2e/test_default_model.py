"""`make run`'s default model (tools/default-model.sh): offline it writes a synthetic SmolLM-
shaped model, says plainly that its output is meaningless, and the server then answers the
README's first requests on it; an existing directory is served as it is."""
import os
import pathlib
import subprocess

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "tools" / "default-model.sh"


def _fetch(binary, fixtures, out, **env):
    e = dict(os.environ, LORAMUX_BIN=str(binary), LORAMUX_FIXTURES=str(fixtures), **env)
    return subprocess.run([str(SCRIPT), str(out)], capture_output=True, text=True, env=e,
                          timeout=300)


def test_offline_default_model_is_synthetic_and_served(binary, fixtures, server, tmp_path):
    out = tmp_path / "default"
    r = _fetch(binary, fixtures, out, LORAMUX_OFFLINE="1")
    assert r.returncode == 0, r.stderr
    said = r.stdout + r.stderr
    assert "SYNTHETIC" in said and "MEANINGLESS" in said, said
    for f in ("config.json", "model.safetensors", "tokenizer.json", "SYNTHETIC.txt"):
        assert (out / f).is_file(), f
    # a second run keeps the directory and warns again
    r = _fetch(binary, fixtures, out, LORAMUX_OFFLINE="1")
    assert r.returncode == 0 and "MEANINGLESS" in r.stdout + r.stderr
    # the README's first request, on the model `make run` serves as "default"
    s = server(out)
    o = s.completion(model="default", prompt="The capital of France is", max_tokens=20,
                     temperature=0)
    assert o["model"] == "default" and o["usage"]["completion_tokens"] >= 1


def test_existing_model_directory_is_kept(binary, fixtures, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text("{}")
    r = _fetch(binary, fixtures, out, LORAMUX_OFFLINE="1")
    assert r.returncode == 0, r.stderr
    assert (out / "config.json").read_text() == "{}"
    assert not (out / "SYNTHETIC.txt").exists()
