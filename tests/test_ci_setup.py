"""CI fails loudly when an engine cannot be set up: scripts/ci-setup.sh (what .ci/run calls before
`make test`) stops at the first failed setup, naming it, with a non-zero exit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_a_broken_docker_setup_fails_ci(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "docker", "exit 1")  # no engine answers ...
    _stub(bin_dir, "dockerd", "echo 'dockerd: cannot start (stub)' >&2; exit 1")  # ... and none starts
    _stub(bin_dir, "debootstrap", "exit 0")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MB_DOCKERD_WAIT": "1",
           "MB_DOCKERD_LOG": str(tmp_path / "dockerd.log")}
    run = subprocess.run([str(ROOT / "scripts" / "ci-setup.sh")], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 1
    assert "ERROR: scripts/ci-docker.sh failed" in run.stderr and "dockerd did not come up" in run.stderr
    assert "=== scripts/ci-slurm.sh" not in run.stdout  # stops at the first failure


def test_ci_runs_the_setup_then_exactly_the_readme_test_command():
    lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[-2:] == ["scripts/ci-setup.sh", "make test"] and "set -euo pipefail" in lines
    assert "make test" in (ROOT / "README.md").read_text().split("\n## ")[0]
