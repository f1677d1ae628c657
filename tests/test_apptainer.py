"""The Apptainer runtime: its exact command line, image ids and errors.

Apptainer cannot be installed on the machines this kit is developed on, so these tests check the argv
and the messages, not a container run (docs/hpc.md says so).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from launchreq import request_for

from mergebench.errors import MergeBenchError
from mergebench.pipeline.runner import stage_env
from mergebench.pipeline.stage import Stage
from mergebench.pipeline.workspace import Workspace
from mergebench.runtimes.apptainer import ApptainerRuntime, build_command, sif_digest


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws").ensure()


def merge_stage(gpus: int = 0) -> Stage:
    return Stage("merge/ties", "merge", {"method": "ties"}, {"family": "fetch"}, "train", gpus, "ab" * 32)


def test_cpu_stage_argv_is_exact(ws, tmp_path):
    rt = ApptainerRuntime(tmp_path / "sif")
    spec = ws.run_dir(merge_stage()) / "spec.json"
    env = stage_env(ws, "merge")
    w = str(ws.root)
    assert rt.command(request_for(merge_stage(), spec, env), 0, "") == [
        "apptainer", "exec", "--cleanenv", "--containall", "--pwd", w, "--bind", f"{w}:{w}",
        "--env", f"HOME={w}/runs/.home", "--env", f"XDG_CACHE_HOME={w}/cache", "--env", f"TORCH_HOME={w}/cache/torch",
        "--env", f"TORCH_EXTENSIONS_DIR={w}/cache/torch_extensions",
        "--env", f"TORCHINDUCTOR_CACHE_DIR={w}/cache/torchinductor", "--env", f"TRITON_CACHE_DIR={w}/cache/triton",
        "--env", f"VLLM_CACHE_ROOT={w}/cache/vllm", "--env", f"HF_HOME={w}/hf", "--env", f"MERGEBENCH_WORKSPACE={w}",
        "--env", "HF_HUB_OFFLINE=1", "--env", "HF_DATASETS_OFFLINE=1", "--env", "TRANSFORMERS_OFFLINE=1",
        "--env", "PYTHONUNBUFFERED=1", "--env", f"MERGEBENCH_IMAGE={tmp_path}/sif/train.sif",
        "--env", "CUDA_VISIBLE_DEVICES=",
        f"{tmp_path}/sif/train.sif", "mergebench", "stage", "run", str(spec)]


def test_gpu_stage_gets_nv_and_its_devices(ws, tmp_path):
    rt = ApptainerRuntime(tmp_path / "sif")
    argv = rt.command(request_for(merge_stage(gpus=2), "/x/spec.json", stage_env(ws, "merge")), 2, "2,3")
    assert argv[:5] == ["apptainer", "exec", "--cleanenv", "--containall", "--nv"]
    assert argv[argv.index("CUDA_VISIBLE_DEVICES=2,3") - 1] == "--env"
    assert argv[-5:] == [f"{tmp_path}/sif/train.sif", "mergebench", "stage", "run", "/x/spec.json"]


def test_without_devices_the_env_is_left_to_the_job(ws, tmp_path):
    """A Slurm job script adds CUDA_VISIBLE_DEVICES from the devices Slurm gave the job."""
    argv = ApptainerRuntime(tmp_path / "sif").command(request_for(merge_stage(1), "/s.json", stage_env(ws, "merge")), 1)
    assert "--nv" in argv and not any(a.startswith("CUDA_VISIBLE_DEVICES") for a in argv)


def test_fetch_stage_is_online_and_never_carries_a_token(ws, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    stage = Stage("fetch", "fetch", {}, {}, "train", 0, "cd" * 32)
    argv = ApptainerRuntime(tmp_path / "sif").command(request_for(stage, "/s.json", stage_env(ws, "fetch")), 0, "")
    assert "HF_HUB_OFFLINE=1" not in argv and not any("hf_secret" in a for a in argv)


def test_cache_paths_outside_the_workspace_and_extra_binds_are_bound(ws, tmp_path):
    rt = ApptainerRuntime(tmp_path / "sif", binds=["/scratch", "/data:/mnt/data"])
    env = {**stage_env(ws, "merge"), "HF_HOME": "/shared/hf"}
    w = str(ws.root)
    assert rt.binds_for(env) == [f"{w}:{w}", "/shared/hf:/shared/hf", "/scratch:/scratch", "/data:/mnt/data"]
    plain = ApptainerRuntime(tmp_path / "sif")
    assert plain.binds_for(stage_env(ws, "merge")) == [f"{w}:{w}"]  # HF_HOME under the workspace: one bind


def test_image_id_is_the_sif_sha256_cached_beside_it(tmp_path):
    sif_dir = tmp_path / "sif"
    sif_dir.mkdir()
    sif = sif_dir / "train.sif"
    sif.write_bytes(b"SIF" * 1000)
    rt = ApptainerRuntime(sif_dir)
    digest = hashlib.sha256(b"SIF" * 1000).hexdigest()
    assert rt.image_id("train") == f"sha256:{digest}"
    size, _, cached = (sif_dir / "train.sif.sha256").read_text().split()
    assert cached == digest and int(size) == 3000
    sif.write_bytes(b"other")  # a rebuilt image changes size and mtime: the digest is recomputed
    assert sif_digest(sif) == hashlib.sha256(b"other").hexdigest()
    assert rt.image_id("lmeval") == f"apptainer:{sif_dir}/lmeval.sif"  # missing: check() reports it


def test_check_says_apptainer_is_not_installed(tmp_path):
    rt = ApptainerRuntime(tmp_path / "sif", executable="apptainer-not-installed-here")
    with pytest.raises(MergeBenchError, match=r"apptainer is not installed here .*--runtime local"):
        rt.check({merge_stage().image})


def test_check_says_how_to_build_a_missing_sif(tmp_path):
    fake = tmp_path / "bin" / "apptainer"  # only so that the SIF check is reached; it is never run
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    rt = ApptainerRuntime(tmp_path / "sif", executable=str(fake), track="modern")
    with pytest.raises(MergeBenchError) as e:
        rt.check({merge_stage().image})
    msg = str(e.value)
    assert "\n" not in msg and f"{tmp_path}/sif/train.sif is missing" in msg and "make sif" in msg
    assert f"apptainer build {tmp_path}/sif/train.sif docker-daemon://mergebench/train:0.1.0-modern" in msg
    (tmp_path / "sif").mkdir()
    (tmp_path / "sif" / "train.sif").write_bytes(b"x")
    rt.check({merge_stage().image})


def test_build_command_uses_the_image_tags():
    assert build_command("lmeval", Path("/s"), "faithful") == \
        "apptainer build /s/lmeval.sif docker-daemon://mergebench/lmeval:0.1.0-faithful"
    assert build_command("sandbox", Path("/s")) == "apptainer build /s/sandbox.sif docker-daemon://mergebench/sandbox:0.1.0-cpu"


def test_sif_dir_defaults_to_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MERGEBENCH_SIF_DIR", str(tmp_path / "images"))
    assert ApptainerRuntime().sif("safety") == tmp_path / "images" / "safety.sif"


@pytest.mark.skipif(shutil.which("apptainer") is None, reason="apptainer is not installed (argv tests cover it)")
def test_apptainer_is_usable_when_installed():  # pragma: no cover - never on the development machines
    assert os.system("apptainer --version") == 0
