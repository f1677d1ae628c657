"""Where a stage's process runs: this venv, a Docker container, Apptainer, or a Slurm job."""

from __future__ import annotations

from mergebench.errors import MergeBenchError
from mergebench.runtimes.base import Handle, Runtime

RUNTIMES = ("local", "docker", "apptainer", "slurm")


def get_runtime(name: str, **options) -> Runtime:
    if name == "local":
        from mergebench.runtimes.local import LocalRuntime

        return LocalRuntime(**options)
    if name == "docker":
        from mergebench.runtimes.docker import DockerRuntime

        return DockerRuntime(**options)
    if name == "apptainer":
        from mergebench.runtimes.apptainer import ApptainerRuntime

        return ApptainerRuntime(**options)
    if name == "slurm":
        from mergebench.runtimes.slurm import SlurmRuntime

        return SlurmRuntime(**options)
    raise MergeBenchError(f"unknown runtime {name!r} (known: {', '.join(RUNTIMES)})")


__all__ = ["RUNTIMES", "Handle", "Runtime", "get_runtime"]
