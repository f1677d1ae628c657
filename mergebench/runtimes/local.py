"""Run stages as subprocesses of this Python environment (the tiny profile, development)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from mergebench.pipeline.stage import Stage
from mergebench.runtimes.base import Handle, Runtime, batch_log_path
from mergebench.runtimes.lifeline import Lifeline


class LocalHandle(Handle):
    def __init__(self, proc: subprocess.Popen, log_fh, lifeline: Lifeline):
        self.proc = proc
        self.log_fh = log_fh
        self.lifeline = lifeline

    def poll(self) -> int | None:
        code = self.proc.poll()
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


class LocalRuntime(Runtime):
    name = "local"
    batches = True

    def image_id(self, image: str) -> str:
        return "local"  # one environment for every stage: this venv

    def start(self, stage: Stage, spec: Path, log: Path, gpus: list[int], env: dict[str, str]) -> Handle:
        return self._spawn([spec], log, {**env, "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))})

    def start_batch(self, stages: list[Stage], specs: list[Path], logs: list[Path], env: dict[str, str]) -> Handle:
        # Each stage logs to its own file; what the process prints between stages goes to the batch log.
        return self._spawn(specs, batch_log_path(logs), {**env, "CUDA_VISIBLE_DEVICES": ""}, own_logs=True)

    def _spawn(self, specs: list[Path], log: Path, env: dict[str, str], own_logs: bool = False) -> Handle:
        argv = [sys.executable, "-m", "mergebench.cli.main", "stage", "run", *map(str, specs)]
        if own_logs:
            argv.append("--own-logs")
        return spawn(argv, log, {**os.environ, **env, "PYTHONUNBUFFERED": "1"})


def spawn(argv: list[str], log: Path, env: dict[str, str], env_prefix: str = "") -> LocalHandle:
    """Start `argv` in its own session, output appended to `log`, tied to this process by a lifeline:
    it dies with the runner, however the runner dies. The variable naming the lifeline's descriptor
    gets `env_prefix` (APPTAINERENV_ for `apptainer exec --cleanenv`, which passes only those)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    lifeline = Lifeline()
    fh = open(log, "a")
    try:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, pass_fds=(lifeline.fd,),
                                env={**env, **{env_prefix + k: v for k, v in lifeline.env().items()}},
                                start_new_session=True)
    except BaseException:
        lifeline.close()
        fh.close()
        raise
    finally:
        lifeline.child_started()
    return LocalHandle(proc, fh, lifeline)
