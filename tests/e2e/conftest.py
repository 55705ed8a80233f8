"""Shared fixtures for the end-to-end tests: the built binary and the third-party fixtures."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def binary():
    path = os.environ.get("LORAMUX_BIN", str(ROOT / "build" / "loramux"))
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not built; run `make` first")
    return path


@pytest.fixture(scope="session")
def fixtures():
    path = pathlib.Path(os.environ.get("LORAMUX_FIXTURES", ROOT.parent / "shared" / "fixtures"))
    if not path.is_dir():
        pytest.fail(f"fixtures not found at {path} (set LORAMUX_FIXTURES)")
    return path


@pytest.fixture
def run(binary):
    def _run(*args, timeout=120):
        return subprocess.run([binary, *map(str, args)], capture_output=True, text=True,
                              timeout=timeout)
    return _run
