"""What an adapter hands to a runtime: one process to run, in which image, with which isolation.

Adapters only describe; runtimes (local, docker, apptainer, slurm) decide how to launch. A run that
executes generated code is marked `sandboxed`: the plan gives it a stage of its own, which every
runtime launches under the one policy of docker/images.yaml (runtimes/sandbox.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mergebench.errors import MergeBenchError


@dataclass(frozen=True)
class HarnessRun:
    """One harness process: argv, environment, image and GPU need; outputs land in `out_dir`."""

    harness: str
    name: str  # e.g. "lmeval-math", "bigcode-generate-humanevalplus"
    image: str
    argv: tuple[str, ...]
    out_dir: str
    env: dict[str, str] = field(default_factory=dict)
    gpus: int = 0
    workdir: str | None = None
    sandboxed: bool = False  # executes generated code: only in a sandboxed stage

    def shell(self) -> str:
        """The command as one copy-pasteable line (for logs and docs)."""
        import shlex

        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return (env + " " if env else "") + shlex.join(self.argv)


def known_tasks(harness: str, tasks, known: tuple[str, ...]) -> tuple[str, ...]:
    """`tasks` as a tuple, or a one-line error naming the first that `harness` does not run."""
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise MergeBenchError(f"{harness} task {unknown[0]!r}: expected some of {', '.join(known)}")
    return tuple(tasks)


#: Environment every evaluation stage runs with: after the fetch stage the hub is never contacted.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def hub_error(e: BaseException) -> str:
    """One line for a failed download: the error's kind and first line, and for a gated repository
    (401/403, or the hub's GatedRepo) how to get access."""
    lines = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    if "gated" in text.lower() or "401" in text or "403" in text or type(e).__name__ == "GatedRepoError":
        return (f"{type(e).__name__} (gated: set HF_TOKEN to a token with access to it, after accepting its "
                "terms on its hub page)")
    return text
