"""Localize-and-Stitch: localize each task in a sparse mask, stitch the masked task vectors together.

Localize, two ways (`masks`):
- `dataless`: the mask of task t keeps |τ_t| ≥ its k-th largest value over the parameter set,
  k = int(sparsity·d), ties kept.
- `trained`: the masks were trained on each specialist's validation data beforehand and are read from
  `--stats` (kind mask, `mergebench stats --kind mask`, mergebench/merging/datapass/masks.py); sparsity, scope and
  threshold_set are then settings of that training, recorded in each mask store.

Stitch, the same for both: where several masks cover an entry, the stitched value is the mean of the
covering tasks' τ.

`--compat reference` (dataless masks, global scope) reproduces the reference code's two defects instead:
it adds each localized task vector into the shared base in place, so task t is localized and stitched
against B_{t-1} = θ0 + Σ_{s<t} m_s ⊙ (θ_s − B_{s-1}) (its threshold found over θ_t − B_{t-1}, a pass
per task), and each mask's overlap count looks only at the last other mask: task i's weight is
1 / (m_i + m_i ∧ m_j), j the last task other than i. The result is B_T + Σ w_i ⊙ (θ_i − B_T). Tensors that
are ranked but never written back (an untied lm_head) keep the unmodified base, as in the reference.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from mergebench.errors import MergeBenchError
from mergebench.merging.io.stats_store import MASK
from mergebench.merging.methods.spec import (
    MethodSpec,
    TensorContext,
    kth_largest_abs,
    setting,
    threshold_mask,
)

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


# --- the reference code's variant (--compat reference) -------------------------------------------------

def reference_localize(tau: torch.Tensor, thresholds: torch.Tensor, upto: int | None = None,
                       writes_back: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of the first `upto` tasks (all by default) localized against the base the reference modifies in
    place, and that base's shift B − θ0 after them. A tensor that is not written back keeps θ0."""
    upto = tau.shape[0] if upto is None else upto
    shift = torch.zeros_like(tau[0])
    masks = torch.zeros((upto, *tau.shape[1:]), dtype=torch.bool, device=tau.device)
    for t in range(upto):
        moved = tau[t] - shift
        masks[t] = moved.abs() >= thresholds[t].to(tau.device)
        if writes_back:
            shift += moved * masks[t]
    return masks, shift


def reference_weights(masks: torch.Tensor) -> torch.Tensor:
    """The reference's overlap rule: task i's weight 1 / (m_i + m_i ∧ m_j), j the last task other than i
    (0 outside its mask); a single task keeps its mask."""
    count = masks.shape[0]
    if count == 1:
        return masks.float()
    weights = torch.zeros(masks.shape, dtype=torch.float32, device=masks.device)
    for i in range(count):
        last_other = count - 1 if i != count - 1 else count - 2
        covered = masks[i].float() + (masks[i] & masks[last_other]).float()
        weights[i] = torch.where(covered > 0, 1.0 / covered.clamp(min=1), 0.0)
    return weights


def reference_stitch(tau: torch.Tensor, ctx: TensorContext, hp: dict[str, Any]) -> torch.Tensor:
    masks, shift = reference_localize(tau, ctx.thresholds)
    return shift + (reference_weights(masks) * (tau - shift)).sum(0)


def reference_thresholds(source, ranked: list[str], written: set[str], hp: dict[str, Any], progress) -> torch.Tensor:
    """Per task, the global threshold over θ_t − B_{t-1}: a pass (two where the exact rank needs it) per task,
    each recomputing B_{t-1} entry by entry from the thresholds found before it."""
    from mergebench.merging.topk import streamed_thresholds

    found = torch.zeros(len(source.experts), dtype=torch.float32, device=source.device)

    def moved(t: int):
        def parts():
            for i, name in enumerate(ranked):
                for block in source.blocks(name, True):
                    tau = source.task_vectors(name, block)[1]
                    _, shift = reference_localize(tau, found, upto=t, writes_back=name in written)
                    yield i, (tau[t] - shift)[None]
        return parts

    for t in range(len(source.experts)):
        found[t] = streamed_thresholds(moved(t), 1, lambda d: localize_rank(hp, d), source.device, progress,
                                       len(ranked), phase=f"thresholds of task {t + 1}")[0]
    return found


def _check_reference(given: set[str], hp: dict[str, Any]) -> None:
    _check(given, hp)
    if hp["masks"] != "dataless" or hp["scope"] != "global":
        raise MergeBenchError("method localize_stitch: --compat reference reproduces the reference code's dataless, "
                              "global Localize-and-Stitch only (masks=dataless, scope=global); drop --compat for "
                              f"masks={hp['masks']}, scope={hp['scope']}")


@dataclass(frozen=True)
class LocalizeStitchSettings:
    sparsity: float = setting(0.1, "fraction of each task vector localized", low=0.0, high=1.0)
    scope: str = setting("global", "mask threshold over the whole parameter set or per tensor",
                         choices=("global", "tensor"))
    threshold_set: str = setting("reference", "entries the global threshold ranks: reference = every tensor whose "
                                 "name lacks 'embed', merged = only the merged tensors",
                                 choices=("reference", "merged"))
    masks: str = setting("dataless", "dataless: top-sparsity masks; trained: masks trained on validation data, read "
                         "from --stats (`mergebench stats --kind mask`)", choices=MASK_SOURCES)


LOCALIZE_STITCH = MethodSpec(
    "localize_stitch",
    "Localize-and-Stitch: per-task sparse masks (top-sparsity, or trained on validation data: --stats), "
    "overlaps averaged",
    localize_stitch,
    settings_type=LocalizeStitchSettings,
    global_rank=localize_rank,
    reference="He et al. 2025",
    stats_kind=lambda hp: MASK if hp["masks"] == "trained" else None,
    elementwise=lambda hp: hp["scope"] == "global" or hp["masks"] == "trained",
    check=_check,
)

#: What `--compat reference` runs instead: the same settings, the reference code's two defects.
LOCALIZE_STITCH = dataclasses.replace(LOCALIZE_STITCH, reference_variant=dataclasses.replace(
    LOCALIZE_STITCH, fn=reference_stitch, threshold_pass=reference_thresholds, check=_check_reference))
