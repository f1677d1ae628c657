"""`make reproduce` hands the host's GPUs to the runner for a real MODEL: GPUS=... when given, else
CUDA_VISIBLE_DEVICES, else every GPU `nvidia-smi -L` lists (here a stand-in nvidia-smi: no GPU exists
on this machine); the tiny profile never asks for any. Checked with `make -n` (the commands only)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _reproduce_argv(tmp_path: Path, *args: str, gpus_listed: int = 0, cuda: str | None = None) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + "".join(f'echo "GPU {i}: NVIDIA H200 (UUID: GPU-{i})"\n'
                                           for i in range(gpus_listed)))
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "GPUS", "MAKEFLAGS")}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    if cuda is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda
    run = subprocess.run(["make", "-s", "-n", "reproduce", *args], cwd=ROOT, capture_output=True, text=True,
                         env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    return " ".join(line.strip().rstrip("\\") for line in run.stdout.splitlines()
                    if "mergebench reproduce" in line or line.strip().startswith("--gpus"))


@pytest.mark.parametrize("args, listed, cuda, expected", [
    (["MODEL=llama-3.2-3b"], 2, None, "--gpus 0,1"),
    (["MODEL=llama-3.2-3b"], 2, "1", "--gpus 1"),
    (["MODEL=llama-3.2-3b", "GPUS=0,2"], 4, "1", "--gpus 0,2"),
])
def test_real_models_get_the_hosts_gpus(tmp_path, args, listed, cuda, expected):
    argv = _reproduce_argv(tmp_path, *args, gpus_listed=listed, cuda=cuda)
    assert "--model llama-3.2-3b --runtime docker" in argv and argv.endswith(expected)


def test_no_gpu_and_the_tiny_profile_pass_none(tmp_path):
    assert "--gpus" not in _reproduce_argv(tmp_path, "MODEL=llama-3.2-3b")
    assert "--gpus" not in _reproduce_argv(tmp_path, gpus_listed=2)
    assert "--model tiny --runtime local" in _reproduce_argv(tmp_path, gpus_listed=2)


def test_make_rehearse_runs_the_rehearsal_once_per_runtime(tmp_path):
    """The target's loop, with a stand-in venv whose `mergebench` prints its argv (the rehearsal itself is
    tests/test_rehearsal.py): BIGCODE_SRC reaches the local runtime, REHEARSE_ARGS every run."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to("/bin/true")
    exe = venv / "bin" / "mergebench"
    exe.write_text('#!/bin/sh\necho "mergebench $*"\n')
    exe.chmod(0o755)
    (venv / ".installed").touch()
    env = {k: v for k, v in os.environ.items() if k != "MAKEFLAGS"}
    run = subprocess.run(["make", "-s", "rehearse", f"VENV={venv}", "REHEARSE_RUNTIMES=local",
                          "BIGCODE_SRC=/src/bigcode", "REHEARSE_ARGS=--eval-limit 1"], cwd=ROOT,
                         capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith("mergebench ")]
    assert lines == ["mergebench rehearse --runtime local --workspace workspace-rehearsal-local "
                     "--results results-rehearsal-local --bigcode-source /src/bigcode --eval-limit 1"]
