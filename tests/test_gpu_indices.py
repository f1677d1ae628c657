"""Each stage sees exactly the GPUs the runner gave it, on every runtime, whatever the harness asks for.

No GPU exists here, so what is checked is what a stage's process is handed: the runner gives GPU 3 of
--gpus 1,3 to a one-GPU stage; the local runtime sets CUDA_VISIBLE_DEVICES=3, Apptainer (`--nv` shows
every host GPU) passes 3, Docker requests device 3 and numbers it 0 inside (the only one there), Slurm's
job script passes the devices Slurm gave the job (tests/test_slurm.py). Inside the stage, safety-eval's
"0" does not override it (tests/test_harness_adapters.py). CPU stages and sandboxed stages get none.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from launchreq import request_for

from mergebench.pipeline.runner import stage_env
from mergebench.pipeline.stage import Stage
from mergebench.pipeline.workspace import Workspace

PROBE = "import os; print('visible=' + os.environ.get('CUDA_VISIBLE_DEVICES', '-'))"


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "ws").ensure()


def _stage(gpus: int) -> Stage:
    return Stage("eval/base/safety", "eval", {"harness": "safety"}, {}, "safety", gpus, "ab" * 32)


def _seen(env: dict[str, str]) -> str:
    """What a process started with `env` reads."""
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_local_runtime_hands_the_stage_its_gpu(ws, tmp_path, monkeypatch):
    from mergebench.runtimes import local

    handed = []
    monkeypatch.setattr(local, "spawn", lambda argv, log, env, **kw: handed.append(env))
    rt = local.LocalRuntime()
    rt.start(request_for(_stage(1), tmp_path / "spec.json", stage_env(ws, "eval"), tmp_path / "log"), [3])
    rt.start(request_for(_stage(0), tmp_path / "spec.json", stage_env(ws, "eval"), tmp_path / "log"), [])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")  # the caller's own choice does not leak through
    rt.start(request_for(_stage(1), tmp_path / "spec.json", stage_env(ws, "eval"), tmp_path / "log"), [3])
    assert [_seen(env) for env in handed] == ["visible=3", "visible=", "visible=3"]


def test_apptainer_passes_the_host_index(ws, tmp_path, monkeypatch):
    from mergebench.runtimes import apptainer

    handed = []
    monkeypatch.setattr(apptainer, "spawn", lambda argv, log, env, **kw: handed.append(argv))
    rt = apptainer.ApptainerRuntime(tmp_path / "sif")
    rt.start(request_for(_stage(1), tmp_path / "spec.json", stage_env(ws, "eval"), tmp_path / "log"), [3])
    rt.start(request_for(_stage(0), tmp_path / "spec.json", stage_env(ws, "eval"), tmp_path / "log"), [])
    gpu, cpu = handed
    assert "--nv" in gpu and "CUDA_VISIBLE_DEVICES=3" in gpu
    assert "--nv" not in cpu and "CUDA_VISIBLE_DEVICES=" in cpu


def test_docker_requests_the_device_and_numbers_it_zero_inside(ws, tmp_path):
    from mergebench.runtimes.docker import DockerRuntime

    rt = DockerRuntime(track="cpu", client=object())
    rt.provenance = lambda image: {}
    gpu = rt.container_kwargs(request_for(_stage(1), tmp_path / "spec.json", stage_env(ws, "eval")), [3])
    assert [(r.device_ids, r.capabilities) for r in gpu["device_requests"]] == [(["3"], [["gpu"]])]
    assert _seen({"CUDA_VISIBLE_DEVICES": gpu["environment"]["CUDA_VISIBLE_DEVICES"]}) == "visible=0"
    cpu = rt.container_kwargs(request_for(_stage(0), tmp_path / "spec.json", stage_env(ws, "eval")), [])
    assert "device_requests" not in cpu and cpu["environment"]["CUDA_VISIBLE_DEVICES"] == ""


def test_a_sandboxed_stage_gets_no_gpu(ws, tmp_path):
    """The plan gives bigcode's execution stage no GPU and nothing but its generations to read."""
    from mergebench.pipeline.plan import build_plan

    plan = build_plan("llama-3.2-3b")
    executing = [s for s in plan.stages if s.params.get("sandbox")]
    assert executing and all(s.gpus == 0 for s in executing)
    assert all(set(s.inputs) == {"generations"} for s in executing)  # nothing but its generations
