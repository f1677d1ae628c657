"""A stage process dies with the runner that started it: no orphans after an OOM kill or a lost login.

Stage processes run in their own session (so that Ctrl-C in the runner's terminal reaches the runner
first, and stopping a stage can kill its whole group), which also means that killing the runner, even
its whole process group with SIGKILL, leaves them running. The runner therefore hands every stage the
read end of a pipe whose write end only it holds (`Lifeline`). When the runner dies for any reason the
kernel closes the write end; the stage's watcher thread (`hold_from_env`) reads end-of-file and kills
the stage and everything it started. A pipe, not a parent-pid check or PR_SET_PDEATHSIG, because it
survives exec wrappers (`apptainer exec`, `srun`) and PID namespaces, and it fires at once.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from mergebench.processes import descendants

ENV = "MERGEBENCH_LIFELINE_FD"


class Lifeline:
    """The runner's end: `fd` goes to the child (`pass_fds`, and `env()` names it); `close()` once the
    child is reaped. The write end is never inherited: a sibling stage must not keep this one alive."""

    def __init__(self) -> None:
        self.fd, self._write = os.pipe()  # both non-inheritable; Popen's pass_fds hands `fd` to the child

    def env(self) -> dict[str, str]:
        return {ENV: str(self.fd)}

    def child_started(self) -> None:
        """The child holds its own copy of the read end now; the runner's copy would only leak."""
        _close(self.fd)

    def close(self) -> None:
        _close(self._write)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def hold_from_env() -> bool:
    """In a stage process: when the runner handed us a lifeline, watch it; True when one was found."""
    value = os.environ.pop(ENV, None)
    if value is None:
        return False
    try:
        fd = int(value)
        os.fstat(fd)
    except (ValueError, OSError):
        return False  # launched by hand with a stale environment: nothing to watch
    os.set_inheritable(fd, False)  # the stage's own children do not need it
    threading.Thread(target=_watch, args=(fd,), name="mergebench-lifeline", daemon=True).start()
    return True


def _watch(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 64):
                break  # EOF: every write end is closed, the runner is gone
        except InterruptedError:
            continue
        except OSError:
            break
    kill_tree(os.getpid())


def kill_tree(root: int, rounds: int = 20) -> None:
    """SIGKILL everything below `root` (repeated, in case a child forks meanwhile), its process group
    when it leads one, and `root` itself last."""
    for _ in range(rounds):
        alive = descendants(root)
        if not alive:
            break
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)
    try:
        if os.getpgid(root) == root:
            os.killpg(root, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.kill(root, signal.SIGKILL)
    except OSError:
        pass
