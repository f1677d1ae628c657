"""TIES-merging: trim each task vector, elect a sign per entry, merge the entries that agree.

Reference semantics (SPEC.md): the trim threshold is the (int(K·d)+1)-th largest |τ_t| over the whole
parameter set (ties kept); where the elected sign sum is exactly zero the sign of the sum of all
elected signs decides (a zero majority behaves like −1, as `where(sign > 0, τ > 0, τ < 0)` does);
trimmed zeros never count in the disjoint mean.
"""

from __future__ import annotations

from typing import Any

import torch

from mergebench.merging.methods.spec import MethodSpec, Param, TensorContext, kth_largest_abs, threshold_mask


def ties_rank(hp: dict[str, Any], d: int) -> int:
    return int(hp["K"] * d) + 1


def _trimmed(tau: torch.Tensor, ctx: TensorContext, hp: dict[str, Any]) -> torch.Tensor:
    thresholds = ctx.thresholds
    if thresholds is None:  # per-tensor scope
        thresholds = kth_largest_abs(tau, ties_rank(hp, tau[0].numel()))
    return tau * threshold_mask(tau, thresholds)


def _merge_trimmed(trimmed: torch.Tensor, total: torch.Tensor, zero_sign: float, hp: dict[str, Any]) -> torch.Tensor:
    """Σ of the trimmed entries whose sign is the elected one (scaled by λ; a disjoint mean if asked).

    With e = ±1 the elected sign, an entry agrees when e·τ > 0, and the sum of the agreeing entries is
    e·Σ max(e·τ, 0): the same floats (negation is exact), in three passes over [T, n] instead of five."""
    elected = torch.sign(total)
    elected.masked_fill_(elected == 0, 1.0 if zero_sign > 0 else -1.0)  # a zero majority behaves like −1
    agreeing = trimmed * elected
    if hp["aggregation"] == "mean":
        count = (agreeing > 0).sum(0)
    merged = agreeing.clamp_(min=0).sum(0).mul_(elected)
    if hp["aggregation"] == "mean":
        merged = merged / count.clamp(min=1)
    return merged * hp["lambda"]


def ties(tau: torch.Tensor, ctx: TensorContext, hp: dict[str, Any]) -> torch.Tensor:
    trimmed = _trimmed(tau, ctx, hp)
    total = trimmed.sum(0)
    zero_sign = ctx.zero_sign
    if zero_sign is None:  # per-tensor scope: this tensor's own majority decides
        zero_sign = float(torch.sign(torch.sign(total).sum()))
    return _merge_trimmed(trimmed, total, zero_sign, hp)


def ties_with_sign(tau: torch.Tensor, ctx: TensorContext, hp: dict[str, Any]):
    """Global scope: the merge under ctx.zero_sign, this tensor's share Σ sgn(Σ_t trimmed τ_t) of the
    majority sign, the flat indices of the entries whose value depends on that sign (trimmed sum 0,
    terms not all 0), and their merged values under the opposite sign."""
    trimmed = _trimmed(tau, ctx, hp)
    total = trimmed.sum(0)
    sign_sum = float(torch.sign(total).sum())
    flat = trimmed.reshape(trimmed.shape[0], -1)
    # A zero sum with a non-zero term: Σ_t |trimmed_t| > 0 says "some term is not 0" exactly (a sum of
    # non-negative floats is at least its largest term), in two streaming passes instead of gathering the
    # many entries nothing survived the trim in.
    survived = flat.abs().sum(0) > 0
    ambiguous = ((total.reshape(-1) == 0) & survived).nonzero().reshape(-1)
    flat = flat[:, ambiguous]
    alternative = _merge_trimmed(flat, flat.sum(0), -ctx.zero_sign, hp)
    return _merge_trimmed(trimmed, total, ctx.zero_sign, hp), sign_sum, ambiguous, alternative


TIES = MethodSpec(
    "ties",
    "TIES: trim to top-K by magnitude, elect signs, merge agreeing entries",
    ties,
    (
        Param("K", float, 0.3, "fraction of each task vector kept by magnitude", low=0.0, high=1.0),
        Param("lambda", float, 0.4, "scale of the merged task vector", low=0.0),
        Param("aggregation", str, "sum", "sum (reference) or mean (disjoint mean of the TIES paper)",
              choices=("sum", "mean")),
        Param("scope", str, "global", "trim threshold over the whole parameter set or per tensor",
              choices=("global", "tensor")),
        Param("threshold_set", str, "reference",
              "entries the global threshold ranks: reference = every tensor whose name lacks 'embed' "
              "(an untied lm_head included), merged = only the merged tensors",
              choices=("reference", "merged")),
    ),
    global_rank=ties_rank,
    with_sign=ties_with_sign,
    reference="Yadav et al. 2023",
    elementwise=lambda hp: hp["scope"] == "global",
)
