"""The docker image, built and run by tests/docker/run.sh (docker, or podman as these machines
need it): /health, /ready, a completion, an adapter upload and a completion through it,
/metrics and the image's HEALTHCHECK. Skipped, with the script's reason, where no engine can
build and run containers; LORAMUX_DOCKER_TEST=0 skips it on purpose.
"""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SKIP = 77  # run.sh's exit status for "cannot run here"


def test_docker_image_serves_and_takes_adapters(binary, fixtures):
    env = dict(os.environ, LORAMUX_BIN=str(binary), LORAMUX_FIXTURES=str(fixtures))
    # The first run makes the base image with debootstrap and builds every layer; later runs
    # reuse both and take a few minutes at most.
    r = subprocess.run(["bash", str(ROOT / "tests" / "docker" / "run.sh")], env=env,
                       capture_output=True, text=True, timeout=1800)
    out = r.stdout + r.stderr
    if r.returncode == SKIP:
        reason = [line for line in r.stdout.splitlines() if line.startswith("SKIP:")]
        pytest.skip(reason[-1] if reason else out[-500:])
    assert r.returncode == 0, out[-6000:]
