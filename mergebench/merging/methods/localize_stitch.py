"""Localize-and-Stitch: localize each task in a sparse mask, stitch the masked task vectors together.

Localize, two ways (`masks`):
- `dataless`: the mask of task t keeps |τ_t| ≥ its k-th largest value over the parameter set,
  k = int(sparsity·d), ties kept.
- `trained`: the masks were trained on each specialist's validation data beforehand and are read from
  `--stats` (kind mask, `mergebench stats --kind mask`, mergebench/merging/masks.py); sparsity, scope and
  threshold_set are then settings of that training, recorded in each mask store.

Stitch, the same for both: where several masks cover an entry, the stitched value is the mean of the
covering tasks' τ (the reference counts only the last overlap; that defect is not reproduced).
"""

from __future__ import annotations

from typing import Any

import torch

from mergebench.errors import MergeBenchError
from mergebench.merging.methods.spec import MethodSpec, Param, TensorContext, kth_largest_abs, threshold_mask

MASK_SOURCES = ("dataless", "trained")
# Settings that only shape dataless masks; trained masks carry their own (set at `mergebench stats`).
DATALESS_ONLY = ("sparsity", "scope", "threshold_set")


def localize_rank(hp: dict[str, Any], d: int) -> int:
    return int(hp["sparsity"] * d)


def stitch(tau: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Σ_t mask_t·τ_t / (number of masks covering the entry); uncovered entries stay 0."""
    return (tau * masks).sum(0) / masks.sum(0).clamp(min=1)


def localize_stitch(tau: torch.Tensor, ctx: TensorContext, hp: dict[str, Any]) -> torch.Tensor:
    if hp["masks"] == "trained":
        return stitch(tau, torch.stack(list(ctx.stats)).to(torch.bool))
    thresholds = ctx.thresholds
    if thresholds is None:
        thresholds = kth_largest_abs(tau, localize_rank(hp, tau[0].numel()))
    return stitch(tau, threshold_mask(tau, thresholds))


def _check(given: set[str], hp: dict[str, Any]) -> None:
    ignored = sorted(given & set(DATALESS_ONLY)) if hp["masks"] == "trained" else []
    if ignored:
        raise MergeBenchError(f"method localize_stitch: setting {ignored[0]} does not apply to masks=trained (the "
                              f"masks were trained with their own; set it with `mergebench stats --kind mask --set "
                              f"{ignored[0]}=...`)")


LOCALIZE_STITCH = MethodSpec(
    "localize_stitch",
    "Localize-and-Stitch: per-task sparse masks (top-sparsity, or trained on validation data: --stats), "
    "overlaps averaged",
    localize_stitch,
    (
        Param("sparsity", float, 0.1, "fraction of each task vector localized", low=0.0, high=1.0),
        Param("scope", str, "global", "mask threshold over the whole parameter set or per tensor",
              choices=("global", "tensor")),
        Param("threshold_set", str, "reference",
              "entries the global threshold ranks: reference = every tensor whose name lacks 'embed', "
              "merged = only the merged tensors", choices=("reference", "merged")),
        Param("masks", str, "dataless",
              "dataless: top-sparsity masks; trained: masks trained on validation data, read from --stats "
              "(`mergebench stats --kind mask`)", choices=MASK_SOURCES),
    ),
    global_rank=localize_rank,
    reference="He et al. 2025",
    stats_kind=lambda hp: "mask" if hp["masks"] == "trained" else None,
    elementwise=lambda hp: hp["scope"] == "global" or hp["masks"] == "trained",
    check=_check,
)
