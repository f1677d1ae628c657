"""The one small interface every runtime implements: start a launch request's process, poll it, stop it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from mergebench.runtimes.request import LaunchRequest


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
    batches = False  # whether start can run a request of several specs (a batch) in one process

    def image_id(self, image: str) -> str:
        """Identity of the environment a stage runs in; part of every stage key."""
        return f"{self.name}:{image}"

    def check(self, images: Iterable[str], gpus: bool = False) -> None:  # noqa: B027 - optional hook
        """Raise a one-line error early when this runtime cannot run stages in these images (no engine,
        a missing image), or with GPUs where `gpus`; nothing to check by default."""

    @abstractmethod
    def start(self, request: LaunchRequest, gpus: list[int]) -> Handle:
        """Launch the request's process on exactly `gpus` (host indices), its output appended to its log."""
