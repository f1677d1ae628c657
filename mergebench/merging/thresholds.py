"""The global passes: one magnitude threshold per specialist over every ranked tensor at once (TIES'
and Localize-and-Stitch's top-k of the whole model, not of each tensor), read through a task-vector
source in one pass, or two where the exact k-th value needs a second look (merging/topk.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mergebench.merging.methods import MethodSpec
from mergebench.merging.source import TaskVectorSource
from mergebench.merging.topk import streamed_thresholds

ProgressFn = Callable[[str, int, int], None]  # (phase, done, total)


def global_thresholds(source: TaskVectorSource, ranked: list[str], spec: MethodSpec, hp: dict[str, Any],
                      progress: ProgressFn | None = None) -> torch.Tensor:
    """Per specialist, the magnitude of its k-th largest |τ| entry over the `ranked` tensors, k from the
    method's `global_rank` of the total entry count."""
    elementwise = spec.is_elementwise(hp)

    def parts():
        for i, name in enumerate(ranked):
            for block in source.blocks(name, elementwise):
                yield i, source.task_vectors(name, block)[1]

    return streamed_thresholds(parts, len(source.experts), lambda d: spec.global_rank(hp, d), source.device,
                               progress or (lambda phase, done, total: None), len(ranked))
