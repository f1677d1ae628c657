"""A merge from its job: the executor its method needs, the streaming engine (tensor by tensor) or
RegMean++'s layer-by-layer one for methods that run data through the model. Callers start here, so the
two executors need not know each other."""

from __future__ import annotations

from mergebench.merging.engine import MergeJob, Merger, MergeResult, ProgressFn
from mergebench.merging.methods import get_method
from mergebench.merging.regmean_pp import RegMeanPlusPlus

__all__ = ["MergeJob", "MergeResult", "make_merger", "merge"]


def make_merger(job: MergeJob, progress: ProgressFn | None = None) -> Merger:
    """The job's executor, its inputs validated (nothing is written before `run()`)."""
    if get_method(job.method).needs_data:
        return RegMeanPlusPlus(job, progress)
    return Merger(job, progress)


def merge(job: MergeJob, progress: ProgressFn | None = None) -> MergeResult:
    return make_merger(job, progress).run()
