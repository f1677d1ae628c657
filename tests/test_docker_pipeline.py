"""The whole tiny pipeline with the docker runtime, inside the locally built CPU images, on a real engine.

`mergebench reproduce --runtime docker` runs the family build, the merge and the report in the train
image and every evaluation in the lmeval image (scripts/ci-docker.sh builds both; skips otherwise).
The containers hold other library versions than this venv (transformers 4.57 there, 5.x here), so
the run is held to the native one (`tiny_run`, the same plan with the local runtime): the family's
weights must be identical bit for bit and every score of the report the same.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from tinypipeline import reproduce

from mergebench.pipeline.plan import build_plan
from mergebench.pipeline.workspace import Workspace

TRACK = "cpu"


@pytest.fixture(scope="module")
def docker_run(tmp_path_factory):
    try:
        import docker
        from mergebench.runtimes.images import image_tag

        client = docker.from_env()
        for image in ("train", "lmeval"):
            client.images.get(image_tag(image, TRACK))
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no Docker engine with the CPU train and lmeval images ({type(e).__name__}); "
                    "run scripts/ci-docker.sh")
    root = tmp_path_factory.mktemp("docker-pipeline")
    ws, results = root / "ws", root / "results"
    env = {**os.environ, "MERGEBENCH_IMAGE_TRACK": TRACK}
    run = reproduce(ws, results, "--runtime", "docker", env=env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return client, ws, results, env


def _weights_digest(model_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(model_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(model_dir.rglob("*.safetensors"))}


def _scores(results: Path) -> dict[str, dict]:
    rows = json.loads((results / "tiny" / "report.json").read_text())["rows"]
    timing = ("merge_seconds", "merge_peak_mib")  # measured, so they differ run to run
    return {r["model"]: {k: v for k, v in r.items() if k not in timing} for r in rows}


def test_containers_give_the_native_family_and_report(docker_run, tiny_run):
    _, ws, results, _ = docker_run
    local_ws, local_results, _ = tiny_run
    family = next((ws / "models").glob("fetch-tiny-*"))
    local_family = next((local_ws / "models").glob("fetch-tiny-*"))
    digests = _weights_digest(family)
    assert len(digests) >= 7 and digests == _weights_digest(local_family)
    scores = _scores(results)
    assert set(scores) == {"base", "instruction", "math", "multilingual", "coding", "safety", "multitask",
                           "merge:soup"}
    assert scores == _scores(local_results)


def test_each_stage_ran_in_its_image_and_nothing_is_left_running(docker_run):
    client, ws, _, env = docker_run
    from mergebench.runtimes.docker import LABEL
    from mergebench.runtimes.images import image_tag

    plan = build_plan("tiny", ["soup"], image_id=lambda image: image, eval_limit=8)
    seen = set()
    for manifest_path in Path(ws).glob("*/*/manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        kind = manifest["stage"]["kind"]
        env_seen = manifest["environment"]["env"]
        image = image_tag("lmeval" if kind == "eval" else "train", TRACK)
        assert env_seen["MERGEBENCH_IMAGE"] == image, manifest_path
        assert env_seen["MERGEBENCH_IMAGE_ID"] == client.images.get(image).id
        assert manifest["exit_code"] == 0
        seen.add(manifest["stage"]["name"])
    assert seen == {s.name for s in plan.stages}
    assert {p.stat().st_uid for p in Workspace(ws).root.glob("models/*/*")} == {os.getuid()}
    assert client.containers.list(all=True, filters={"label": f"{LABEL}.workspace={ws}"}) == []


def test_second_docker_run_skips_every_stage(docker_run, tmp_path):
    _, ws, _, env = docker_run
    again = reproduce(ws, tmp_path / "r", "--runtime", "docker", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "running" not in again.stderr and "0 stage(s) run" in again.stderr
