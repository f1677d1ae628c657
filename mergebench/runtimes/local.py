"""Run stages as subprocesses of this Python environment (the tiny profile, development); a stage that
runs generated code in bubblewrap, under docker/images.yaml's sandbox policy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mergebench.processes import descendants, kill_all, live_processes, namespace_members, pid_namespace
from mergebench.runtimes.base import Handle, Runtime
from mergebench.runtimes.lifeline import Lifeline
from mergebench.runtimes.request import TOKENS, LaunchRequest
from mergebench.runtimes.sandbox import Mounts, PidsCgroup, bwrap_argv, bwrap_limits, sandbox_env


class LocalHandle(Handle):
    def __init__(self, proc: subprocess.Popen, log_fh, lifeline: Lifeline, timeout_s: float | None = None,
                 sandboxed: bool = False):
        self.proc = proc
        self.log_fh = log_fh
        self.lifeline = lifeline
        self.deadline = time.time() + timeout_s if timeout_s else None
        self.sandboxed = sandboxed
        self.namespaces: set[str] = set()  # the sandbox's pid namespace, once seen
        self.cgroup = None  # a root-started sandbox's pids cgroup (runtimes/sandbox.py PidsCgroup)

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is None and self.sandboxed:
            own = pid_namespace(os.getpid())
            self.namespaces |= {ns for pid in descendants(self.proc.pid) if (ns := pid_namespace(pid)) != own and ns}
        if code is None and self.deadline is not None and time.time() > self.deadline:
            self.log_fh.write("\n[runner] stopped: the sandbox's wall-clock limit (stage_timeout_s) was reached\n")
            self.stop()
            return 124
        if code is not None:
            self._empty_namespaces()
        if code is not None and not self.log_fh.closed:
            self.log_fh.close()
            self.lifeline.close()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.poll()

    def _empty_namespaces(self, patience: float = 10.0) -> None:
        """A sandbox's processes die with its namespace, but the kernel kills them one by one: return
        once none is left (a fork bomb's hundreds take a moment), so nothing outlives the stage."""
        if self.cgroup is not None:
            self.cgroup.empty(patience)
            self.cgroup = None
        deadline = time.monotonic() + patience
        seen: set[int] = set()  # a dying member may no longer show its namespace: wait for the pid itself
        while self.namespaces and time.monotonic() < deadline:
            members = {pid for ns in self.namespaces for pid in namespace_members(ns)}
            seen = (seen | members) & {proc.pid for proc in live_processes()}
            if not seen:
                break
            kill_all(members)
            time.sleep(0.02)
        self.namespaces = set()


class LocalRuntime(Runtime):
    name = "local"
    batches = True

    def image_id(self, image: str) -> str:
        return "local"  # one environment for every stage: this venv

    def start(self, request: LaunchRequest, gpus: list[int]) -> Handle:
        env = {**request.env, "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
        if request.sandbox is not None:
            return self.sandboxed(request, env)
        # this venv's own environment, less the hub's secrets where the stage does not reach the hub
        inherited = {k: v for k, v in os.environ.items() if request.hub or k not in TOKENS}
        argv = [sys.executable, "-m", "mergebench.cli.main", *request.entry()]
        return spawn(argv, request.log, {**inherited, **env, "PYTHONUNBUFFERED": "1"})

    def sandboxed(self, request: LaunchRequest, env: dict[str, str] | None = None,
                  argv: list[str] | None = None) -> Handle:
        """Generated code: the stage (or `argv`, in tests) in bubblewrap (runtimes/sandbox.py), or a
        one-line refusal where bubblewrap cannot run."""
        sandbox, env = request.sandbox, env if env is not None else dict(request.env)
        policy, mounts = sandbox.policy, Mounts.for_request(sandbox, env)
        argv = bwrap_argv(policy, mounts, argv or [sys.executable, "-m", "mergebench.cli.main", *request.entry()])
        mounts.prepare(None)  # bwrap maps its nobody to the caller: the caller's files
        cgroup = PidsCgroup(policy.pids_limit) if os.getuid() == 0 else None
        try:
            handle = spawn(argv, request.log, sandbox_env(env), preexec=bwrap_limits(policy, cgroup),
                           timeout_s=policy.stage_timeout_s, sandboxed=True)
        except BaseException:
            if cgroup is not None:
                cgroup.empty()
            raise
        handle.cgroup = cgroup
        return handle


def spawn(argv: list[str], log: Path, env: dict[str, str], env_prefix: str = "", preexec=None,
          timeout_s: float | None = None, sandboxed: bool = False) -> LocalHandle:
    """Start `argv` in its own session, output appended to `log`, tied to this process by a lifeline:
    it dies with the runner, however the runner dies. The variable naming the lifeline's descriptor
    gets `env_prefix` (APPTAINERENV_ for `apptainer exec --cleanenv`, which passes only those)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    lifeline = Lifeline()
    fh = open(log, "a")
    try:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, pass_fds=(lifeline.fd,),
                                env={**env, **{env_prefix + k: v for k, v in lifeline.env().items()}},
                                start_new_session=True, preexec_fn=preexec)
    except BaseException:
        lifeline.close()
        fh.close()
        raise
    finally:
        lifeline.child_started()
    return LocalHandle(proc, fh, lifeline, timeout_s, sandboxed)
