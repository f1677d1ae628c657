"""Dataless Localize-and-Stitch: keep each task's top-`sparsity` entries, average where masks overlap.

The mask of task t keeps |τ_t| ≥ its k-th largest value over the parameter set, k = int(sparsity·d),
ties kept. Where several masks cover an entry, the stitched value is the mean over all of them (the
reference counts only the last one; that defect is not reproduced).
"""

from __future__ import annotations

from typing import Any

import torch

from mergebench.merging.methods.spec import MethodSpec, Param, TensorContext, kth_largest_abs, threshold_mask


def localize_rank(hp: dict[str, Any], d: int) -> int:
    return int(hp["sparsity"] * d)


def localize_stitch(tau: torch.Tensor, ctx: TensorContext, hp: dict[str, Any]) -> torch.Tensor:
    thresholds = ctx.thresholds
    if thresholds is None:
        thresholds = kth_largest_abs(tau, localize_rank(hp, tau[0].numel()))
    masks = threshold_mask(tau, thresholds)
    covered = masks.sum(0)
    return (tau * masks).sum(0) / covered.clamp(min=1)


LOCALIZE_STITCH = MethodSpec(
    "localize_stitch",
    "Localize-and-Stitch (dataless): top-sparsity masks per task, overlaps averaged",
    localize_stitch,
    (
        Param("sparsity", float, 0.1, "fraction of each task vector localized", low=0.0, high=1.0),
        Param("scope", str, "global", "mask threshold over the whole parameter set or per tensor",
              choices=("global", "tensor")),
        Param("threshold_set", str, "reference",
              "entries the global threshold ranks: reference = every tensor whose name lacks 'embed', "
              "merged = only the merged tensors", choices=("reference", "merged")),
    ),
    global_rank=localize_rank,
    reference="He et al. 2025",
    elementwise=lambda hp: hp["scope"] == "global",
)
