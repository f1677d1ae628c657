"""Run an untrusted generated program on this machine with the sandbox rules the kit applies to
generated code (tiny suite; the bigcode execution stage uses the container form of the same rules).

Local form: a fresh isolated interpreter in its own session, in an empty temporary directory, with
no environment, no network (a new network namespace via `unshare` when the kernel allows it), as the
unprivileged user nobody when started by root (so the program cannot write outside world-writable
places), and limits on address space, processes, CPU time, file size and wall time. The whole process
group is killed at the end, so a fork bomb leaves nothing behind.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache

from mergebench.processes import group_members


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 512 * 2**20
    processes: int = 32
    cpu_seconds: int = 10
    file_bytes: int = 1 * 2**20
    wall_seconds: float = 10.0


@dataclass(frozen=True)
class Outcome:
    returncode: int | None  # None: killed at the wall-time limit
    stdout: str
    stderr: str


@lru_cache(maxsize=1)
def network_isolation() -> list[str]:
    """`unshare` prefix giving the child an empty network namespace, or [] where that is not allowed."""
    exe = shutil.which("unshare")
    if exe is None:
        return []
    for prefix in ([exe, "--net"], [exe, "--map-root-user", "--net"]):
        try:
            if subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0:
                return prefix
        except (OSError, subprocess.SubprocessError):
            continue
    return []


def _limits(limits: Limits):
    def apply() -> None:
        os.setsid()
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))  # binds non-root
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


NOBODY = 65534


def drop_privileges() -> list[str]:
    """`setpriv` prefix that runs the program as nobody when we are root, else []."""
    exe = shutil.which("setpriv")
    if os.getuid() != 0 or exe is None:
        return []
    return [exe, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def run_untrusted(program: str, limits: Limits = Limits()) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="mergebench-sandbox-") as work:
        drop = drop_privileges()
        if drop:
            os.chown(work, NOBODY, NOBODY)
        argv = [*network_isolation(), *drop, sys.executable, "-I", "-S", "-c", program]
        proc = subprocess.Popen(argv, cwd=work, env={"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work},
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=_limits(limits))
        try:
            out, err = proc.communicate(timeout=limits.wall_seconds)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
            out, err = "", "wall-time limit reached"
        finally:
            _kill_group(proc.pid)
            if code is None:
                proc.communicate()
    return Outcome(code, out, err)


def _kill_group(pgid: int, patience: float = 10.0) -> None:
    """SIGKILL the whole group until no member is left alive: a kill is delivered asynchronously, and on a
    loaded machine a fork bomb's last children can outlive one signal by a scheduler tick."""
    deadline = time.monotonic() + patience
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if not os.path.isdir("/proc") or not group_members(pgid) or time.monotonic() > deadline:
            return
        time.sleep(0.02)
