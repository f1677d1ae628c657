"""The one small interface every runtime implements: start a stage's process, poll it, stop it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from mergebench.pipeline.stage import Stage


class Handle(ABC):
    """A started stage process."""

    @abstractmethod
    def poll(self) -> int | None:
        """Exit code when finished, else None."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the process and release what it holds (containers removed, jobs cancelled)."""


class Runtime(ABC):
    name = "abstract"
    batches = False  # whether start_batch can run several stages in one process

    def image_id(self, image: str) -> str:
        """Identity of the environment a stage runs in; part of every stage key."""
        return f"{self.name}:{image}"

    def check(self, stages: list[Stage]) -> None:  # noqa: B027 - optional hook, nothing to check by default
        """Raise a one-line error early when this runtime cannot run these stages (no engine, no GPU)."""

    @abstractmethod
    def start(self, stage: Stage, spec: Path, log: Path, gpus: list[int], env: dict[str, str]) -> Handle:
        """Launch `mergebench stage run SPEC` for the stage, its output appended to `log`."""

    def start_batch(self, stages: list[Stage], specs: list[Path], logs: list[Path], env: dict[str, str]) -> Handle:
        """Launch several CPU stages in one process, each writing its own log (runtimes with `batches`)."""
        raise NotImplementedError(f"runtime {self.name} runs one stage per process")


def batch_log_path(logs: list[Path]) -> Path:
    """Where a batch's own output goes (what its process prints between stages): beside the stages' logs."""
    return logs[0].parent.parent / f"batch-{logs[0].parent.name}.log"
