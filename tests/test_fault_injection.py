"""Kill the tiny pipeline over and over, restart it each time, and hold the end result to a clean run's.

`mergebench reproduce` runs in its own session; at each kill point the test waits until a stage of
one phase (fetch, stats, merge, eval, report) has started, lets it run for a while, then SIGKILLs the
runner alone (what an OOM kill of the orchestrator does) or its whole process group (a lost login).
After every kill no process of the run may be left (stages die with their runner), and the next
run resumes. At the end: no `.partial` leftovers, every complete stage's output is the clean run's
(weights and records), and the report equals the clean run's, timings aside.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tinypipeline import EXE

from mergebench.pipeline.plan import build_plan
from mergebench.pipeline.workspace import Workspace

ARGS = ["--methods", "soup", "--methods", "regmean", "--eval-limit", "8"]
#: (phase, seconds its stage runs before the kill, what is killed): 22 points, both kinds of kill. A
#: phase already over is not waited for: the kill lands in the next one that starts.
PHASES = ("fetch", "stats", "merge", "eval", "report")
KILLS = [("fetch", 0.5, "runner"), ("fetch", 4.0, "group"), ("fetch", 12.0, "runner"), ("fetch", 25.0, "group"),
         ("stats", 0.3, "group"), ("stats", 2.0, "runner"), ("stats", 4.0, "group"), ("stats", 6.0, "runner"),
         ("merge", 0.2, "runner"), ("merge", 0.8, "group"), ("merge", 1.5, "runner"), ("merge", 2.5, "group"),
         ("eval", 0.2, "group"), ("eval", 1.0, "runner"), ("eval", 3.0, "group"), ("eval", 5.0, "runner"),
         ("eval", 7.0, "group"), ("eval", 9.0, "runner"),
         ("report", 0.2, "runner"), ("report", 1.0, "group"), ("report", 2.0, "runner"), ("report", 3.0, "group")]
TIMING = ("merge_seconds", "merge_peak_mib")


def _start(ws: Path, results: Path) -> subprocess.Popen:
    return subprocess.Popen([EXE, "reproduce", *ARGS, "--workspace", str(ws), "--results", str(results)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _run_processes(ws: Path) -> list[int]:
    """Processes that belong to runs on `ws`: every stage (and what it starts) has it in its environment."""
    marker = f"MERGEBENCH_WORKSPACE={ws}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state != b"Z" and marker in environ.split(b"\0"):
            found.append(int(entry))
    return found


def _wait_for_no_processes(ws: Path, timeout: float = 15.0) -> list[int]:
    deadline = time.time() + timeout
    while (left := _run_processes(ws)) and time.time() < deadline:
        time.sleep(0.1)
    return left


def _kill_during(ws: Path, results: Path, phase: str, delay: float, what: str) -> str | None:
    """Start a run and kill it `delay` s after a stage of `phase` (or of a later phase, when that one
    is over) starts; returns the phase hit, None when the run had nothing left to do."""
    proc = _start(ws, results)
    assert proc.stderr is not None
    hit = None
    for line in proc.stderr:
        words = line.split()
        if len(words) >= 2 and words[0] == "running":
            started = words[1].split("/")[0]
            if PHASES.index(started) >= PHASES.index(phase):
                time.sleep(delay)
                if what == "runner":
                    os.kill(proc.pid, signal.SIGKILL)
                else:
                    os.killpg(proc.pid, signal.SIGKILL)
                hit = started
                break
    proc.stderr.close()
    code = proc.wait(timeout=600)
    assert hit or code == 0, f"run failed before the kill point ({phase}): exit {code}"
    return hit


def _scores(results: Path) -> dict[str, dict]:
    rows = json.loads((results / "tiny" / "report.json").read_text())["rows"]
    return {r["model"]: {k: v for k, v in r.items() if k not in TIMING} for r in rows}


def _digests(folder: Path) -> dict[str, str]:
    wanted = (".safetensors", "record.json")
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name.endswith(wanted)}


@pytest.fixture(scope="module")
def clean_run(tiny_run, tmp_path_factory):
    """The same plan run without faults: the session's tiny run (family, soup, evaluations) plus regmean."""
    root = tmp_path_factory.mktemp("clean")
    ws, results = root / "ws", root / "results"
    shutil.copytree(tiny_run[0], ws, ignore=shutil.ignore_patterns(".lock", "*.lock"))
    run = subprocess.run([EXE, "reproduce", *ARGS, "--workspace", str(ws), "--results", str(results)],
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    return ws, results


def test_kills_at_every_phase_leave_no_orphans_and_the_clean_result(clean_run, tmp_path):
    ws, results = tmp_path / "ws", tmp_path / "results"
    hits, orphans = [], {}
    plan = build_plan("tiny", ["soup", "regmean"], image_id=lambda image: "local", eval_limit=8)
    for phase, delay, what in KILLS:
        hit = _kill_during(ws, results, phase, delay, what)
        if hit is None:  # the kills so far let it finish (a fast machine): give it its work again
            for stage in plan.stages:
                if stage.kind != "tiny_build":
                    shutil.rmtree(Workspace(ws).output(stage), ignore_errors=True)
            hit = _kill_during(ws, results, phase, delay, what)
        if hit:
            hits.append((hit, delay, what))
            left = _wait_for_no_processes(ws)
            if left:
                orphans[f"{phase} +{delay}s ({what})"] = left
                for pid in left:  # leave nothing behind even when failing
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
    assert not orphans, f"processes outlived their runner: {orphans}"
    assert len(hits) >= 20 and {p for p, _, _ in hits} == {"fetch", "stats", "merge", "eval", "report"}, repr(hits)
    assert {w for _, _, w in hits} == {"runner", "group"}

    final = subprocess.run([EXE, "reproduce", *ARGS, "--workspace", str(ws), "--results", str(results)],
                           capture_output=True, text=True, timeout=1200)
    assert final.returncode == 0, final.stderr[-3000:]
    assert not _run_processes(ws)
    leftovers = [str(p.relative_to(ws)) for p in ws.rglob("*") if ".partial" in p.name or p.name.endswith(".tmp")]
    assert leftovers == []

    clean_ws, clean_results = clean_run
    for stage in plan.stages:
        mine, theirs = Workspace(ws).output(stage), Workspace(clean_ws).output(stage)
        assert Workspace(ws).is_complete(stage), stage.name
        assert json.loads((mine / "manifest.json").read_text())["exit_code"] == 0
        if stage.kind in ("tiny_build", "stats", "merge"):
            assert _digests(mine) == _digests(theirs), stage.name
        if stage.kind == "eval":
            record = json.loads((mine / "record.json").read_text())
            clean = json.loads((theirs / "record.json").read_text())
            assert record["metrics"] == clean["metrics"], stage.name
    assert _scores(results) == _scores(clean_results)


def test_a_spec_rewritten_while_a_stage_reads_it_is_never_seen_half_written(tmp_path):
    """A restarted runner writes the spec of a stage whose container it then adopts; the container may
    be reading that very file as it starts. The reader must see a whole spec every time."""
    import threading

    from mergebench.pipeline.execute import write_spec

    ws = Workspace(tmp_path / "ws").ensure()
    plan = build_plan("tiny", methods=["soup"])
    stage = plan.by_name["merge/soup"]
    path = write_spec(ws, stage, plan.by_name)
    seen, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            try:
                seen.append(json.loads(path.read_text())["stage"]["name"])
            except (json.JSONDecodeError, KeyError) as e:
                seen.append(f"broken: {type(e).__name__}")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(3000):
            write_spec(ws, stage, plan.by_name)
    finally:
        stop.set()
        reader.join()
    assert len(seen) > 100 and set(seen) == {"merge/soup"}
    assert [p.name for p in path.parent.iterdir()] == ["spec.json"]  # no temporary left beside it
