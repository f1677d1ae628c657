"""The global passes: one magnitude threshold per specialist over every ranked tensor at once (TIES'
and Localize-and-Stitch's top-k of the whole model, not of each tensor), read through a task-vector
source in one pass, or two where the exact k-th value needs a second look (merging/topk.py).

A sample of rows read first (every stride-th row of every ranked tensor, about SAMPLE_ENTRIES entries
per specialist) says in which few histogram bins each threshold will fall. On the CPU one pass over
pieces of the mapped files then counts the entries above those bins and keeps the ones inside
(`windowed_thresholds`); elsewhere, or where the sample was wrong, the histogram passes run, resolving
the sampled bins in the first, so the second is needed only where the sample missed. The sample
changes nothing but the time."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from mergebench.merging.io.source import TaskVectorSource
from mergebench.merging.methods import MethodSpec
from mergebench.merging.topk import WindowedThreshold, streamed_thresholds

SAMPLE_ENTRIES = 2**20  # per specialist
Z = 6.0  # the sampled window spans this many standard errors of the sample's rank either side

ProgressFn = Callable[[str, int, int], None]  # (phase, done, total)


def global_thresholds(source: TaskVectorSource, ranked: list[str], spec: MethodSpec, hp: dict[str, Any],
                      progress: ProgressFn | None = None) -> torch.Tensor:
    """Per specialist, the magnitude of its k-th largest |τ| entry over the `ranked` tensors, k from the
    method's `global_rank` of the total entry count."""
    elementwise = spec.needs(hp).elementwise

    def parts():
        for i, name in enumerate(ranked):
            for block in source.blocks(name, elementwise):
                yield i, source.task_vectors(name, block)[1]

    progress = progress or (lambda phase, done, total: None)
    windows = sample_windows(source, ranked, lambda d: spec.global_rank(hp, d))
    if windows is not None and source.device.type == "cpu":
        found = windowed_thresholds(source, ranked, windows, spec.global_rank(hp, source.count(ranked)), progress)
        if found is not None:
            return found
        windows = None  # the sample was wrong (or an input not finite): the plain passes decide, and say why
    return streamed_thresholds(parts, len(source.experts), lambda d: spec.global_rank(hp, d), source.device,
                               progress, len(ranked), windows=windows)


def windowed_thresholds(source: TaskVectorSource, ranked: list[str], windows: list[tuple[int, int]], rank: int,
                        progress: ProgressFn) -> torch.Tensor | None:
    """The thresholds in one pass over cache-sized pieces of the mapped checkpoints (merging/topk.py's
    WindowedThreshold), or None where a threshold lies outside its sampled window or an input is not
    finite."""
    acc = WindowedThreshold(windows)
    if not acc.usable:
        return None
    for i, name in enumerate(ranked):
        for block in source.blocks(name, True):  # row blocks: a large tensor's maps close block by block
            pieces = source.pieces(name, block)
            (work,) = source.work(1, pieces.size)
            for lo, hi, _, taus in pieces:
                for t, tau in enumerate(taus):
                    acc.add(t, torch.abs(tau, out=work[: hi - lo]))
            if not pieces.finite:
                return None
        progress("thresholds 1/2", i + 1, len(ranked))
    return acc.thresholds(rank)


def sample_windows(source: TaskVectorSource, ranked: list[str], rank_of: Callable[[int], int]
                   ) -> list[tuple[int, int]] | None:
    """Per specialist, the high histogram bins (merging/topk.py) its threshold is all but certain to fall
    in, from every stride-th row of the ranked tensors; None for a model too small to be worth sampling."""
    total = source.count(ranked)
    stride = total // SAMPLE_ENTRIES
    rank = rank_of(total)
    if stride < 2 or not 0 < rank <= total:
        return None
    parts = []
    for i, name in enumerate(ranked):
        shape = source.base.tensors[name].shape
        phase = (i * 7919) % stride  # a different row offset per tensor
        if len(shape) < 2:  # vectors are small: read whole, keep every stride-th entry
            parts.append(source.task_vectors(name)[1][:, phase::stride].abs())
            continue
        for r in range(phase, shape[0], stride):
            parts.append(source.task_vectors(name, (r, r + 1))[1].reshape(len(source.experts), -1).abs())
    sample = torch.cat(parts, dim=1)
    n = sample.shape[1]
    q = rank / total
    delta = Z * math.sqrt(n * q * (1 - q)) + 1
    high = sample.kthvalue(n - min(max(math.floor(q * n - delta), 1), n) + 1, dim=1).values
    low = sample.kthvalue(n - min(max(math.ceil(q * n + delta), 1), n) + 1, dim=1).values
    return [(lo, hi) for lo, hi in zip(_high_bins(low), _high_bins(high), strict=True)]


def _high_bins(values: torch.Tensor) -> list[int]:
    """The high-16-bit histogram bin of each non-negative fp32 value (merging/topk.py's first pass)."""
    return (values.float().contiguous().view(torch.int32) >> 16).tolist()
