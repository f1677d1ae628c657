"""The tiny pipeline end to end with the local runtime: report, resume, skip, force, lock, bad input.

One session-scoped run (`tiny_run` in conftest: family build, one merge, every evaluation on a few
rows) feeds several tests, and the docker runtime's run is compared with it;
the run is the real thing: `mergebench reproduce` in a subprocess, stages in their own processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tinypipeline import ARGS, EXE, reproduce

from mergebench.errors import MergeBenchError
from mergebench.pipeline.lock import WorkspaceLock
from mergebench.pipeline.plan import build_plan
from mergebench.pipeline.workspace import Workspace


def test_report_is_written_with_every_model(tiny_run):
    ws, results, first = tiny_run
    report = json.loads((results / "tiny" / "report.json").read_text())
    labels = {r["model"] for r in report["rows"]}
    assert labels == {"base", "instruction", "math", "multilingual", "coding", "safety", "multitask", "merge:soup"}
    soup = next(r for r in report["rows"] if r["model"] == "merge:soup")
    assert soup["merge_seconds"] is not None and soup["np"] is not None
    assert "| merge:soup | merge |" in (results / "tiny" / "report.md").read_text()
    for png in ("np_per_method.png", "retention.png", "np_vs_cost.png"):
        assert (results / "tiny" / "plots" / png).stat().st_size > 1000
    assert "MergeBench · tiny" in first.stdout


def test_a_logged_run_shows_counts_and_whole_names(tiny_run):
    """Outside a terminal: one complete line per event with the count, and the report table as wide as
    its names (rich would cut it at 80 columns)."""
    _, _, first = tiny_run
    total = len(build_plan("tiny", ARGS[1:2], eval_limit=8).stages)
    done = [line for line in first.stderr.splitlines() if line.split()[:1] == ["done"]]
    assert len(done) == total and all(re.search(rf"\[\d+/{total}, \d+:\d\d elapsed", line) for line in done)
    assert f"[{total}/{total}, " in done[-1] and "ETA" in done[0]
    header = next(line for line in first.stdout.splitlines() if "model" in line and "multilingual" in line)
    assert "held-out" in header and "…" not in first.stdout and "merge:soup" in first.stdout


def test_every_stage_has_a_manifest_with_provenance(tiny_run):
    ws, _, _ = tiny_run
    plan = build_plan("tiny", ARGS[1:2], image_id=lambda image: "local", eval_limit=8)
    for stage in plan.stages:
        manifest = json.loads((Workspace(ws).output(stage) / "manifest.json").read_text())
        assert manifest["stage"]["key"] == stage.key and manifest["exit_code"] == 0
        assert manifest["kit"]["version"] and any(p.startswith("torch==") for p in manifest["environment"]["packages"])
        assert "HF_TOKEN" not in json.dumps(manifest)


def test_second_run_skips_everything(tiny_run):
    ws, results, _ = tiny_run
    again = reproduce(ws, results)
    assert again.returncode == 0, again.stderr
    assert "running" not in again.stderr and "0 stage(s) run" in again.stderr


def test_changing_a_setting_reruns_only_its_dependants():
    a = build_plan("tiny", ["soup"], eval_limit=8).by_name
    b = build_plan("tiny", ["soup"], eval_limit=9).by_name
    assert a["fetch/tiny"].key == b["fetch/tiny"].key
    assert a["merge/soup"].key == b["merge/soup"].key
    assert a["eval/merge:soup"].key != b["eval/merge:soup"].key and a["report"].key != b["report"].key


def test_killed_run_resumes_and_partial_output_never_counts(tiny_run, tmp_path):
    ws, results, _ = tiny_run
    proc = subprocess.Popen([EXE, "reproduce", *ARGS, "--workspace", str(ws), "--results", str(tmp_path / "r"),
                             "--force", "merge/soup"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    stage = build_plan("tiny", ["soup"], image_id=lambda image: "local", eval_limit=8).by_name["merge/soup"]
    partial = Workspace(ws).partial(stage)
    deadline = time.time() + 120
    while not partial.exists() and time.time() < deadline:  # the stage has started writing
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its stage, mid-merge
    proc.wait()
    assert partial.exists() and not Workspace(ws).is_complete(stage)
    resumed = reproduce(ws, tmp_path / "r")
    assert resumed.returncode == 0, resumed.stderr
    assert "running merge/soup" in resumed.stderr and "running fetch/tiny" not in resumed.stderr
    assert Workspace(ws).is_complete(stage)
    assert not list((ws / "models").glob("*.partial"))


def test_failed_stage_stops_its_dependants_and_keeps_its_log(tiny_run, tmp_path):
    ws, _, _ = tiny_run
    stage = build_plan("tiny", ["soup"], image_id=lambda image: "local", eval_limit=8).by_name["merge/soup"]
    out = Workspace(ws).output(stage)
    saved = out.with_name("saved")
    os.rename(out, saved)
    family = next((ws / "models").glob("fetch-tiny-*"))
    config = family / "base" / "config.json"
    original = config.read_text()
    config.write_text("{broken")
    try:
        failed = reproduce(ws, tmp_path / "r")
    finally:
        config.write_text(original)
        os.rename(saved, out)
    assert failed.returncode == 1
    assert "failed merge/soup: log " in failed.stderr.replace("\n", " ")
    assert "eval/merge:soup" in failed.stderr and "report" in failed.stderr  # blocked, named
    log = Path(failed.stderr.split("failed merge/soup: log ")[1].split()[0])
    assert "invalid JSON" in log.read_text()


def test_workspace_lock_refuses_a_second_run(tiny_run, tmp_path):
    ws, _, _ = tiny_run
    with WorkspaceLock(ws):
        second = reproduce(ws, tmp_path / "r")
    assert second.returncode == 1
    assert f"error: workspace {ws} is in use by another run (pid {os.getpid()}" in second.stderr


def test_unwritable_workspace_and_unknown_model(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = reproduce(blocker / "ws", tmp_path / "r")
    assert r.returncode == 1 and f"workspace {blocker / 'ws'} is not writable" in r.stderr
    r = subprocess.run([EXE, "reproduce", "--model", "llama-4"], capture_output=True, text=True)
    assert r.returncode == 1 and "unknown model 'llama-4'" in r.stderr
    with pytest.raises(MergeBenchError, match="unknown method 'nope'"):
        build_plan("tiny", ["nope"])


def test_gpu_stages_are_scheduled_onto_free_gpus_concurrently(tiny_run):
    """GPUs cannot exist here: the local runtime only sets CUDA_VISIBLE_DEVICES, which is what a stage
    sees on a GPU host too; two one-GPU merges on --gpus 0,1 must run at the same time, one per GPU."""
    from mergebench.pipeline.runner import Runner
    from mergebench.runtimes.local import LocalRuntime

    ws, _, _ = tiny_run
    plan = build_plan("tiny", ["soup", "ties"], image_id=lambda image: "local", eval_limit=8)
    keep = {"fetch/tiny", "merge/soup", "merge/ties"}
    plan.stages = [s for s in plan.stages if s.name in keep]
    for s in plan.stages:
        s.gpus = 1 if s.kind == "merge" else 0
    summary = Runner(plan, Workspace(ws), LocalRuntime(), gpus=[0, 1]).run(force=["merge"])
    assert summary.status == {"fetch/tiny": "skipped", "merge/soup": "done", "merge/ties": "done"}
    manifests = [json.loads((Workspace(ws).output(plan.by_name[n]) / "manifest.json").read_text())
                 for n in ("merge/soup", "merge/ties")]
    assert sorted(m["environment"]["env"]["CUDA_VISIBLE_DEVICES"] for m in manifests) == ["0", "1"]
    (a_start, a_end), (b_start, b_end) = [(m["started_unix"], m["finished_unix"]) for m in manifests]
    assert a_start < b_end and b_start < a_end  # the two ran at the same time


def test_gpu_stage_without_gpus_is_a_clear_error(tiny_run):
    from mergebench.pipeline.runner import Runner
    from mergebench.runtimes.local import LocalRuntime

    ws, _, _ = tiny_run
    plan = build_plan("tiny", ["soup"], image_id=lambda image: "local", eval_limit=8)
    plan.stages = [s for s in plan.stages if s.name in ("fetch/tiny", "merge/soup")]
    plan.by_name["merge/soup"].gpus = 1
    with pytest.raises(MergeBenchError, match=r"stage merge/soup needs 1 GPU\(s\) but 0 were given"):
        Runner(plan, Workspace(ws), LocalRuntime()).run(force=["merge/soup"])


def test_eval_command_on_the_tiny_suite_and_a_failing_harness(tiny_run, tmp_path):
    ws, _, _ = tiny_run
    family = next((ws / "models").glob("fetch-tiny-*"))
    r = subprocess.run([EXE, "eval", "--suite", "tiny", "--model", str(family / "base"), "--model",
                        str(family / "coding"), "--data", str(family / "data"), "--limit", "6",
                        "--out", str(tmp_path / "ev")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    base = json.loads((tmp_path / "ev" / "base" / "record.json").read_text())
    coding = json.loads((tmp_path / "ev" / "coding" / "record.json").read_text())
    assert coding["metrics"]["tiny_coding"]["acc,none"] > base["metrics"]["tiny_coding"]["acc,none"]
    assert (tmp_path / "ev" / "coding" / "results.json").is_file()
    # The real lm_eval CLI, offline: gsm8k cannot load, so the run fails; the error names model, harness
    # and run, and the harness's log stays.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "PATH": f"{Path(EXE).parent}:{os.environ.get('PATH', '')}"}  # the venv activated, as a user has it
    r = subprocess.run([EXE, "eval", "--suite", "mergebench", "--harness", "lmeval", "--model", str(family / "base"),
                        "--out", str(tmp_path / "mb")], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 1
    assert "error: lmeval run lmeval-math for model base exited with code" in r.stderr
    log = Path(r.stderr.split("its log: ")[1].strip())
    assert log.is_file() and "gsm8k" in log.read_text()
    assert not (tmp_path / "mb" / "base" / "record.json").exists()


def test_a_stage_that_completes_and_exits_between_two_looks_is_done(tiny_run):
    """The runner looks at a stage's output and at its process: a process that finishes both between the
    two looks (a loaded machine, a container exiting) is done, never 'failed: exit code 0'. The handle
    here waits for its process on the first poll, which puts the whole stage inside that window."""
    from mergebench.pipeline.runner import Runner
    from mergebench.runtimes.local import LocalRuntime

    class WaitingHandle:
        def __init__(self, inner):
            self.inner = inner

        def poll(self):
            while self.inner.poll() is None:
                time.sleep(0.05)
            return self.inner.poll()

        def stop(self):
            self.inner.stop()

    class Waiting(LocalRuntime):
        def start(self, request, gpus):
            return WaitingHandle(super().start(request, gpus))

    ws, _, _ = tiny_run
    plan = build_plan("tiny", ["soup"], image_id=lambda image: "local", eval_limit=8)
    plan.stages = [s for s in plan.stages if s.name in ("fetch/tiny", "merge/soup")]
    summary = Runner(plan, Workspace(ws), Waiting()).run(force=["merge/soup"])
    assert summary.status == {"fetch/tiny": "skipped", "merge/soup": "done"}
