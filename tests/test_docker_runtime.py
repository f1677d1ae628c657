"""The docker runtime on a real Docker engine with the locally built CPU train image.

Needs the engine and `mergebench/train:<version>-cpu` (scripts/ci-docker.sh, which .ci/run calls);
skips with the reason otherwise. Checks: the shared workspace, the uid of written files, exit codes,
live log streaming, labels, and that SIGTERM stops and removes the running container.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from launchreq import request_for
from reference_merge import load_all
from tinymodels import build_base, build_specialist

from mergebench.catalog import DOMAIN_NAMES
from mergebench.pipeline.plan import Plan
from mergebench.pipeline.runner import Runner
from mergebench.pipeline.stage import Stage
from mergebench.pipeline.workspace import Workspace

TRACK = "cpu"


def _engine():
    try:
        import docker

        client = docker.from_env()
        client.ping()
        from mergebench.runtimes.images import image_tag

        client.images.get(image_tag("train", TRACK))
        return client
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no Docker engine with the CPU train image ({type(e).__name__}); run scripts/ci-docker.sh")


@pytest.fixture(scope="module")
def client():
    return _engine()


def family_plan(ws: Path, method: str = "soup", settings: dict | None = None, size: dict | None = None) -> Plan:
    """A local family inside the workspace (so the container sees it) and one merge stage."""
    src = ws / "import"
    base = build_base("llama-tied", src / "base") if not (src / "base").exists() else src / "base"
    paths = {"base": str(base)}
    for i, domain in enumerate(DOMAIN_NAMES):
        target = src / domain
        paths[domain] = str(target if target.exists() else build_specialist(base, target, seed=200 + i))
    plan = Plan("local")
    plan.add(Stage("fetch/local", "local_family", {"paths": paths}, {}, "train"))
    plan.add(Stage(f"merge/{method}", "merge", {"method": method, "settings": settings or {}},
                   {"family": "fetch/local"}, "train"))
    plan.assign_keys(lambda image: image)
    return plan


def test_stage_runs_in_the_image_with_shared_workspace_uid_logs_and_cleanup(client, tmp_path):
    from mergebench.runtimes.docker import LABEL, DockerRuntime

    ws = Workspace(tmp_path / "ws").ensure()
    plan = family_plan(ws.root)
    os.chmod(tmp_path, 0o777)  # let the container's unprivileged uid read the inputs and write outputs
    for d in [ws.root, *ws.root.iterdir()]:
        os.chmod(d, 0o777)
    subprocess.run(["chmod", "-R", "a+rX", str(ws.root / "import")], check=True)
    summary = Runner(plan, ws, DockerRuntime(track=TRACK, user="4321:4321")).run()
    assert summary.status == {"fetch/local": "done", "merge/soup": "done"}
    out = ws.output(plan.by_name["merge/soup"])
    merged = load_all(out / "model")
    experts = [load_all(ws.root / "import" / d) for d in DOMAIN_NAMES]
    name = "model.layers.0.mlp.up_proj.weight"
    torch.testing.assert_close(merged[name], torch.stack([e[name] for e in experts]).mean(0), rtol=0, atol=1e-6)
    assert {p.stat().st_uid for p in out.rglob("*")} == {4321}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["environment"]["env"]["MERGEBENCH_IMAGE"].endswith(f"train:0.1.0-{TRACK}")
    log = ws.log(plan.by_name["merge/soup"]).read_text()
    assert "[merge/soup] merge →" in log and "[merge/soup] done in" in log
    assert client.containers.list(all=True, filters={"label": f"{LABEL}.workspace={ws.root}"}) == []


def test_failing_stage_reports_its_exit_code_and_log(client, tmp_path):
    from mergebench.runtimes.docker import DockerRuntime

    ws = Workspace(tmp_path / "ws").ensure()
    plan = family_plan(ws.root, settings={"lambda": -1}, method="task_arithmetic")
    summary = Runner(plan, ws, DockerRuntime(track=TRACK)).run()
    assert summary.status["merge/task_arithmetic"] == "failed"
    log = Path(summary.logs["merge/task_arithmetic"]).read_text()
    assert "setting lambda=-1.0 is outside" in log and "exit code 1" in log


def test_sigterm_stops_and_removes_running_containers(client, tmp_path):
    from mergebench.runtimes.docker import LABEL

    ws = Workspace(tmp_path / "ws").ensure()
    family_plan(ws.root)  # build the inputs here; the runner below only launches
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_docker_runtime import family_plan
        from mergebench.pipeline.runner import Runner
        from mergebench.pipeline.workspace import Workspace
        from mergebench.runtimes.docker import DockerRuntime
        ws = Workspace({str(ws.root)!r})
        plan = family_plan(ws.root, method="dare", settings={{"seed": 1}})
        Runner(plan, ws, DockerRuntime(track={TRACK!r})).run()
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    label = {"label": f"{LABEL}.stage=merge/dare"}
    deadline = time.time() + 120
    while time.time() < deadline and not client.containers.list(filters=label):
        time.sleep(0.2)
    assert client.containers.list(filters=label), "the merge container never started"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert client.containers.list(all=True, filters=label) == []
    plan = family_plan(ws.root, method="dare", settings={"seed": 1})
    assert not ws.is_complete(plan.by_name["merge/dare"])


def test_docker_unreachable_and_missing_image_say_what_to_do(monkeypatch):
    from mergebench.errors import MergeBenchError
    from mergebench.runtimes.docker import DockerRuntime

    stage = Stage("merge/soup", "merge", {}, {}, "train")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(MergeBenchError, match=r"Docker is not reachable .*--runtime local"):
        DockerRuntime(track=TRACK).check({stage.image})
    monkeypatch.undo()
    _engine()
    with pytest.raises(MergeBenchError, match=r"image nowhere/mergebench/train:0.1.0-cpu is missing; build it with"):
        DockerRuntime(track=TRACK, prefix="nowhere").check({stage.image})


def test_a_restarted_runner_adopts_the_container_of_a_killed_one(client, tmp_path):
    """SIGKILL the runner while its merge container runs: the container goes on (the engine owns it);
    the next runner finds it by its labels, waits for it instead of starting the stage again, and
    leaves no container behind."""
    from mergebench.runtimes.docker import LABEL, DockerRuntime

    ws = Workspace(tmp_path / "ws").ensure()
    family_plan(ws.root)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_docker_runtime import family_plan
        from mergebench.pipeline.runner import Runner
        from mergebench.pipeline.workspace import Workspace
        from mergebench.runtimes.docker import DockerRuntime
        ws = Workspace({str(ws.root)!r})
        Runner(family_plan(ws.root, method="dare", settings={{"seed": 2}}), ws, DockerRuntime(track={TRACK!r})).run()
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    label = {"label": f"{LABEL}.stage=merge/dare"}
    deadline = time.time() + 120
    while time.time() < deadline and not client.containers.list(filters=label):
        time.sleep(0.05)
    running = client.containers.list(filters=label)
    assert running, "the merge container never started"
    proc.kill()
    proc.wait(timeout=30)
    assert [c.id for c in client.containers.list(filters=label)] == [running[0].id]  # it outlives its runner

    plan = family_plan(ws.root, method="dare", settings={"seed": 2})
    summary = Runner(plan, ws, DockerRuntime(track=TRACK)).run()
    log = ws.log(plan.by_name["merge/dare"]).read_text()
    assert summary.status == {"fetch/local": "skipped", "merge/dare": "done"}, log[-4000:]
    assert f"[runner] adopted container {running[0].short_id}" in log
    assert "[merge/dare] done in" in log and "waiting:" not in log  # no second process ever wanted the stage
    assert client.containers.list(all=True, filters=label) == []


def test_only_hub_stages_get_a_network_the_token_and_the_endpoint(monkeypatch, tmp_path):
    """The settings handed to the Docker SDK: fetch kinds on MERGEBENCH_FETCH_NETWORK (the rehearsal's
    "host", to reach a hub on loopback) with HF_TOKEN and HF_ENDPOINT; every other stage on no network."""
    from mergebench.pipeline.stage import Stage
    from mergebench.runtimes.docker import DockerRuntime

    class Containers:
        def __init__(self):
            self.runs = []

        def list(self, **kwargs):
            return []

        def run(self, **kwargs):
            self.runs.append(kwargs)
            return None

    class Client:
        containers = Containers()

        class images:  # noqa: N801 - the SDK's attribute name
            @staticmethod
            def get(tag):
                raise LookupError(tag)

    rt = DockerRuntime(client=Client())
    monkeypatch.setenv("MERGEBENCH_FETCH_NETWORK", "host")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr("mergebench.runtimes.docker.DockerHandle", lambda container, log, since=None, timeout_s=None: container)
    env = {"MERGEBENCH_WORKSPACE": str(tmp_path)}
    for kind in ("fetch_tasks", "fetch", "eval"):
        rt.start(request_for(Stage(kind, kind, {}, {}, "lmeval", 0, "ab" * 32), tmp_path / "spec.json", env,
                             tmp_path / "log"), [])
    fetch_tasks, fetch, evaluation = Client.containers.runs
    for hub in (fetch_tasks, fetch):
        assert hub["network_mode"] == "host"
        assert hub["environment"]["HF_TOKEN"] == "hf_secret" and hub["environment"]["HF_ENDPOINT"] == "http://127.0.0.1:9"
    assert evaluation["network_mode"] == "none"
    assert "HF_TOKEN" not in evaluation["environment"] and "HF_ENDPOINT" not in evaluation["environment"]
    monkeypatch.delenv("MERGEBENCH_FETCH_NETWORK")
    assert rt.container_kwargs(request_for(Stage("fetch", "fetch", {}, {}, "train", 0, "ab" * 32), tmp_path, env), [])[
        "network_mode"] == "bridge"
