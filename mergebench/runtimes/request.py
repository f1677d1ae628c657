"""What the pipeline hands every runtime to start a stage's process: one `LaunchRequest`.

A runtime only translates a request (Docker SDK settings, a subprocess, `apptainer exec`, an sbatch
script) and owns what the host decides: which GPUs the process sees (CUDA_VISIBLE_DEVICES), how a
secret reaches it, how the sandbox policy is enforced. It never looks into the pipeline: what a
request needs of a stage (its name, kind, key, image, spec files, log, inputs) is written out here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mergebench.runtimes.sandbox import SandboxRequest

__all__ = ["HUB_ENV", "TOKENS", "LaunchRequest", "SandboxRequest"]

#: What a hub stage may be told about where the hub is (a mirror, or the rehearsal's double), taken from
#: the caller's environment by runtimes that do not pass it on by themselves.
HUB_ENV = ("HF_ENDPOINT", "MERGEBENCH_NLTK_INDEX")
#: The hub's secrets: only hub stages see them, and never on a command line or in a file.
TOKENS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


@dataclass(frozen=True)
class LaunchRequest:
    """One process to start: `mergebench stage run SPEC...` in `image`, its output appended to `log`.

    Several specs make a batch: CPU stages of one kind run one after another in one process, each
    writing its own log (`--own-logs`), `log` being the batch's. `after` names the requests that must
    succeed first: the runner orders launches itself, Slurm turns them into job dependencies."""

    name: str  # the stage's name (a batch: its stages' names joined by commas)
    kind: str
    key: str  # the stage's content key (a batch: its first stage's)
    image: str
    specs: tuple[Path, ...]
    log: Path
    workspace: Path
    done: Path  # the file that exists once the stage is complete (its manifest)
    env: Mapping[str, str] = field(default_factory=dict)  # without CUDA_VISIBLE_DEVICES: the runtime's
    gpus: int = 0  # how many the stage needs; which ones, the runtime is told at start
    hub: bool = False  # reaches the hub: network, the token and HUB_ENV
    sandbox: SandboxRequest | None = None
    after: tuple[str, ...] = ()

    @property
    def batch(self) -> bool:
        return len(self.specs) > 1

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).strip("-")

    def entry(self) -> list[str]:
        """The entry point's arguments after `mergebench` (or `python -m mergebench.cli.main`)."""
        return ["stage", "run", *map(str, self.specs), *(["--own-logs"] if self.batch else [])]
