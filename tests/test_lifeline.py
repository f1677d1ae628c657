"""Stage processes die with their runner, however it dies (mergebench/runtimes/lifeline.py), and a
stage lock makes a second process wait for the first instead of writing the same folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from mergebench.pipeline.lock import StageLock
from mergebench.processes import descendants, live_processes

#: A "stage": holds its lifeline, starts a grandchild in a session of its own (as sandboxes do), and
#: writes both pids, then sleeps.
STAGE = textwrap.dedent("""
    import subprocess, sys, time
    from mergebench.runtimes.lifeline import hold_from_env
    assert hold_from_env(), "no lifeline was handed over"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    open(sys.argv[1], "w").write(f"{child.pid}\\n")
    time.sleep(600)
""")
#: A "runner": starts the stage through the local runtime's spawn, prints its pid, waits forever.
RUNNER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from mergebench.runtimes.local import spawn
    handle = spawn([sys.executable, "-c", sys.argv[1], sys.argv[2]], Path(sys.argv[3]), dict(__import__("os").environ))
    print(handle.proc.pid, flush=True)
    time.sleep(600)
""")


def _alive(pid: int) -> bool:
    return pid in {proc.pid for proc in live_processes()}


def _wait_dead(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.time() + timeout
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


@pytest.mark.parametrize("how", ["runner", "group"])
def test_a_stage_and_what_it_started_die_with_their_runner(tmp_path, how):
    pids_file = tmp_path / "grandchild"
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, STAGE, str(pids_file), str(tmp_path / "log.txt")],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    stage = int(runner.stdout.readline())
    deadline = time.time() + 60
    while not pids_file.exists() or not pids_file.read_text().endswith("\n"):
        assert time.time() < deadline, (tmp_path / "log.txt").read_text()
        time.sleep(0.05)
    grandchild = int(pids_file.read_text())
    assert _alive(stage) and _alive(grandchild) and os.getpgid(grandchild) != os.getpgid(stage)
    if how == "runner":
        runner.kill()
    else:
        os.killpg(runner.pid, signal.SIGKILL)  # the stage runs in a session of its own: untouched by this
    runner.wait()
    assert _wait_dead([stage, grandchild]) == []


def test_without_a_lifeline_nothing_is_watched(monkeypatch):
    from mergebench.runtimes.lifeline import ENV, hold_from_env

    monkeypatch.delenv(ENV, raising=False)
    assert hold_from_env() is False
    monkeypatch.setenv(ENV, "987654")  # a stale variable from a hand-copied environment
    assert hold_from_env() is False


def test_descendants_lists_the_whole_tree():
    outer = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"])
    try:
        deadline = time.time() + 30
        while len(descendants(os.getpid())) < 2 and time.time() < deadline:
            time.sleep(0.05)
        tree = descendants(os.getpid())
        assert outer.pid in tree and len([p for p in tree if p != outer.pid]) >= 1
    finally:
        for pid in descendants(outer.pid):
            os.kill(pid, signal.SIGKILL)
        outer.kill()
        outer.wait()


def test_a_second_holder_of_a_stage_waits_and_says_for_whom(tmp_path):
    said: list[str] = []
    path = tmp_path / "stage.lock"
    first = StageLock(path, "merge/ties").__enter__()
    entered = threading.Event()

    def second() -> None:
        with StageLock(path, "merge/ties", say=said.append):
            entered.set()

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.5)
    assert not entered.is_set()
    assert said and said[0].startswith(f"[merge/ties] waiting: pid {os.getpid()} on ") and "still runs" in said[0]
    first.__exit__(None, None, None)
    thread.join(timeout=10)
    assert entered.is_set()
