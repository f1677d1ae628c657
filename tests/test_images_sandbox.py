"""The sandbox image, run exactly as docker/images.yaml says generated code is run, contains what it must:
a correct program passes, the network is absent, nothing outside the tmpfs is writable, a fork bomb
hits the pids limit, runaway memory is killed. Needs a Docker engine and the sandbox image
(scripts/ci-docker.sh provides both); skips with the reason otherwise."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
IMAGES = yaml.safe_load((ROOT / "docker" / "images.yaml").read_text())
SANDBOX = IMAGES["sandbox"]
TAG = IMAGES["tag"].format(image="sandbox", version=IMAGES["kit_version"], track="cpu")


@functools.cache
def engine_problem() -> str | None:
    """Why the Docker tests cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH (CI: scripts/ci-docker.sh installs and starts Docker)"
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer"
    if info.returncode != 0:
        return f"no reachable Docker engine (scripts/ci-docker.sh starts one): {info.stderr.strip()[:200]}"
    image = subprocess.run(["docker", "image", "inspect", TAG], capture_output=True, text=True, timeout=20)
    if image.returncode != 0:
        return f"image {TAG} is not built (scripts/ci-docker.sh builds it)"
    return None


@pytest.fixture(autouse=True)
def _needs_engine():
    problem = engine_problem()
    if problem:
        pytest.skip(problem)


def sandbox_flags() -> list[str]:
    """`docker run` flags of docker/images.yaml's sandbox section, the way the orchestrator runs code."""
    flags = ["--network", SANDBOX["network"], "--user", SANDBOX["user"], "--tmpfs", SANDBOX["tmpfs"],
             "--cap-drop", SANDBOX["cap_drop"], "--security-opt", SANDBOX["security_opt"],
             "--pids-limit", str(SANDBOX["pids_limit"]), "--memory", SANDBOX["memory"],
             "--memory-swap", SANDBOX["memory_swap"], "--cpus", str(SANDBOX["cpus"])]
    if SANDBOX["read_only"]:
        flags.append("--read-only")
    return flags


def run(code: str, *, timeout: float = 60, remove: bool = True) -> tuple[subprocess.CompletedProcess, str]:
    """Run a Python program (fed on stdin) in the sandbox; returns the process and the container name."""
    name = f"mergebench-sandbox-test-{uuid.uuid4().hex[:12]}"
    cmd = ["docker", "run", "-i", "--name", name, *(["--rm"] if remove else []), *sandbox_flags(),
           TAG, "python3", "-"]
    try:
        proc = subprocess.run(cmd, input=textwrap.dedent(code), capture_output=True, text=True, timeout=timeout)
    finally:
        if remove:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    return proc, name


def test_a_correct_program_passes_and_a_wrong_one_fails():
    program = "def add(a, b):\n    return a + b\n"
    ok, _ = run(program + "assert add(2, 3) == 5\nprint('passed')\n")
    assert ok.returncode == 0 and ok.stdout.strip() == "passed", ok.stderr
    bad, _ = run(program + "assert add(2, 3) == 6\n")
    assert bad.returncode == 1 and "AssertionError" in bad.stderr


def test_runs_as_the_unprivileged_user_without_capabilities():
    proc, _ = run("""
        import os
        print(os.getuid(), os.getgid())
        print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])
        """)
    uid_gid, cap_eff = proc.stdout.split("\n")[:2]
    assert uid_gid == SANDBOX["user"].replace(":", " ")
    assert int(cap_eff, 16) == 0


def test_network_access_fails():
    proc, _ = run("""
        import socket
        print(sorted(name for _, name in socket.if_nameindex()))
        for target in [("1.1.1.1", 53), ("151.101.0.223", 443), ("pypi.org", 443)]:
            try:
                socket.create_connection(target, timeout=3).close()
                print("CONNECTED", target)
            except OSError as exc:
                print("blocked", target[0], type(exc).__name__)
        """)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "['lo']"  # the loopback interface and nothing else
    assert "CONNECTED" not in proc.stdout and sum(ln.startswith("blocked") for ln in lines) == 3


def test_writing_outside_the_tmpfs_fails():
    proc, _ = run("""
        import errno, os, stat, subprocess, sys
        for path in ["/evil", "/etc/passwd", "/usr/local/lib/evil.py", "/home/evil",
                     os.path.join(os.path.dirname(os.__file__), "evil.py")]:
            try:
                with open(path, "a") as f:
                    f.write("x")
                print("WROTE", path)
            except OSError as exc:
                print("refused", path, errno.errorcode[exc.errno])
        with open("/tmp/ok.txt", "w") as f:  # the tmpfs is the one writable place
            f.write("fine")
        print("tmp", open("/tmp/ok.txt").read())
        with open("/tmp/run.sh", "w") as f:
            f.write("#!/bin/sh\\necho EXECUTED\\n")
        os.chmod("/tmp/run.sh", 0o755)
        try:
            subprocess.run(["/tmp/run.sh"], check=True)
        except PermissionError:
            print("noexec")
        """)
    assert proc.returncode == 0, proc.stderr
    assert "WROTE" not in proc.stdout and proc.stdout.count("refused") == 5
    assert "tmp fine" in proc.stdout and "noexec" in proc.stdout and "EXECUTED" not in proc.stdout


def test_a_fork_bomb_hits_the_pids_limit():
    proc, _ = run("""
        import os, time
        children = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                children += 1
        except OSError as exc:
            print("refused after", children, exc.errno)
        """, timeout=60)
    assert proc.returncode == 0, proc.stderr
    children = int(proc.stdout.split()[2])
    assert 0 < children < SANDBOX["pids_limit"]


def test_an_endless_fork_bomb_stays_contained_and_is_killed():
    name = f"mergebench-sandbox-test-{uuid.uuid4().hex[:12]}"
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    cmd = ["docker", "run", "-i", "--rm", "--name", name, *sandbox_flags(), TAG, "python3", "-c", bomb]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(4)
        stats = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.PIDs}}", name],
                               capture_output=True, text=True, timeout=30)
        pids = int(stats.stdout.strip())
        assert 0 < pids <= SANDBOX["pids_limit"]
        start = time.monotonic()
        subprocess.run(["docker", "kill", name], capture_output=True, timeout=30)
        assert proc.wait(timeout=30) != 0
        assert time.monotonic() - start < 30
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        if proc.poll() is None:
            proc.kill()


def test_runaway_memory_is_killed():
    proc, name = run("""
        import sys
        chunks = []
        while True:
            chunks.append(b"x" * (16 << 20))  # written, so really resident
            print(len(chunks) * 16, flush=True)
        """, timeout=120, remove=False)
    try:
        state = json.loads(subprocess.run(["docker", "inspect", "--format", "{{json .State}}", name],
                                          capture_output=True, text=True, check=True).stdout)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    assert proc.returncode == 137 and state["OOMKilled"] is True, (proc.returncode, state)
    limit_mib = int(SANDBOX["memory"].rstrip("m"))
    assert int(proc.stdout.split()[-1]) <= limit_mib
