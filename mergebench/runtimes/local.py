"""Run stages as subprocesses of this Python environment (the tiny profile, development)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from mergebench.pipeline.stage import Stage
from mergebench.runtimes.base import Handle, Runtime, batch_log_path


class LocalHandle(Handle):
    def __init__(self, proc: subprocess.Popen, log_fh):
        self.proc = proc
        self.log_fh = log_fh

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is not None and not self.log_fh.closed:
            self.log_fh.close()
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
        log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(log, "a")
        argv = [sys.executable, "-m", "mergebench.cli.main", "stage", "run", *map(str, specs)]
        if own_logs:
            argv.append("--own-logs")
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **env,
                                "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        return LocalHandle(proc, fh)
