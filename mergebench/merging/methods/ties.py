"""TIES-merging: trim each task vector, elect a sign per entry, merge the entries that agree.

Reference semantics (SPEC.md): the trim threshold is the (int(K·d)+1)-th largest |τ_t| over the whole
parameter set (ties kept); where the elected sign sum is exactly zero the sign of the sum of all
elected signs decides (a zero majority behaves like −1, as `where(sign > 0, τ > 0, τ < 0)` does);
trimmed zeros never count in the disjoint mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from mergebench.merging.methods.spec import (
    MethodSpec,
    TensorContext,
    kth_largest_abs,
    setting,
    sum_in_order,
    threshold_mask,
)

# A stream of pieces (TaskVectorSource.pieces): (lo, hi, θ_0[lo:hi], the τ_t[lo:hi] in specialist order).
Pieces = Iterable[tuple[int, int, torch.Tensor, Iterator[torch.Tensor]]]


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
    merged = sum_in_order(agreeing.clamp_(min=0), from_zero=True).mul_(elected)
    if hp["aggregation"] == "mean":
        merged = merged / count.clamp(min=1)
    return merged * hp["lambda"]


def ties(tau: torch.Tensor, ctx: TensorContext, hp: dict[str, Any]) -> torch.Tensor:
    trimmed = _trimmed(tau, ctx, hp)
    total = sum_in_order(trimmed)
    zero_sign = ctx.zero_sign
    if zero_sign is None:  # per-tensor scope: this tensor's own majority decides
        zero_sign = float(torch.sign(torch.sign(total).sum()))
    return _merge_trimmed(trimmed, total, zero_sign, hp)


def ties_with_sign(tau: torch.Tensor, ctx: TensorContext, hp: dict[str, Any]):
    """Global scope: the merge under ctx.zero_sign, this tensor's share Σ sgn(Σ_t trimmed τ_t) of the
    majority sign, the flat indices of the entries whose value depends on that sign (trimmed sum 0,
    terms not all 0), and their merged values under the opposite sign."""
    trimmed = _trimmed(tau, ctx, hp)
    total = sum_in_order(trimmed)
    sign_sum = float(torch.sign(total).sum())
    flat = trimmed.reshape(trimmed.shape[0], -1)
    # A zero sum with a non-zero term: Σ_t |trimmed_t| > 0 says "some term is not 0" exactly (a sum of
    # non-negative floats is at least its largest term), in two streaming passes instead of gathering the
    # many entries nothing survived the trim in.
    survived = flat.abs().sum(0) > 0
    ambiguous = ((total.reshape(-1) == 0) & survived).nonzero().reshape(-1)
    flat = flat[:, ambiguous]
    alternative = _merge_trimmed(flat, sum_in_order(flat), -ctx.zero_sign, hp)
    return _merge_trimmed(trimmed, total, ctx.zero_sign, hp), sign_sum, ambiguous, alternative


def ties_with_sign_pieces(pieces: Pieces, ctx: TensorContext, hp: dict[str, Any], dtype: torch.dtype, count: int,
                          work: list[torch.Tensor]):
    """`ties_with_sign` under zero sign +1, from a stream of pieces, as (θ_0 + merged as `dtype`, sign sum,
    indices, θ_0 + their merged values under −1): the same floats, in a few passes over each cache-sized
    piece instead of many over the [T, n] task vectors.

    Per entry, with the trimmed terms x_t (τ_t where |τ_t| ≥ threshold_t, else 0): the total Σ x_t, the
    positive part P = Σ max(x_t, 0) and the negative part N = Σ min(x_t, 0), each added in specialist
    order. Under the elected sign e the agreeing sum e·Σ max(e·x_t, 0) is P for e = +1 and N for e = −1
    (negation is exact), so the merge is P where the total is ≥ 0 and N elsewhere; an entry depends on the
    majority sign exactly when its total is 0 and P > 0 (a sum of non-zero terms of one sign is never 0).
    P starts from +0, like the plain path's sums, so a zero result is +0 there too. `work`: at least 8
    reused fp32 buffers as long as the longest piece."""
    assert ctx.zero_sign is not None and ctx.zero_sign > 0, "pieces are merged under zero sign +1"
    # |x| ≥ t exactly when |x| > the float just below t: hardshrink keeps x where |x| > λ, threshold where x > λ.
    below = torch.nextafter(ctx.thresholds.float().cpu(), torch.zeros(())).tolist()
    mean, scale = hp["aggregation"] == "mean", hp["lambda"]
    out = torch.empty(count, dtype=dtype)
    sign_sum, indices, values = 0.0, [], []
    for lo, hi, base, taus in pieces:
        total, pos, neg, keep, drop, tmp, n_pos, n_neg = (w[: hi - lo] for w in work[:8])
        for t, tau in enumerate(taus):  # keep and drop hold each term until the sums are done
            trimmed = torch.hardshrink(tau, below[t], out=keep)
            positive = torch.threshold(tau, below[t], 0.0, out=drop)
            if t == 0:
                total.copy_(trimmed)
                torch.add(positive, 0.0, out=pos)  # +0 + x: a zero P is +0
                negative = torch.sub(trimmed, positive, out=neg)
            else:
                total.add_(trimmed)
                pos.add_(positive)
                negative = trimmed.sub_(positive)  # the trimmed term less its positive part: exact
                neg.add_(negative)
            if mean:  # agreeing terms counted: positive ones for e = +1, negative ones for e = −1
                torch.sign(positive, out=tmp)
                n_pos.copy_(tmp) if t == 0 else n_pos.add_(tmp)
                torch.sign(negative, out=tmp)
                torch.neg(tmp, out=n_neg) if t == 0 else n_neg.sub_(tmp)
        torch.sign(total, out=tmp)
        sign_sum += float(tmp.sum())
        torch.add(tmp, 1.0, out=keep).clamp_(max=1.0)  # 1 where the total is ≥ 0 (e = +1), else 0
        torch.sub(1.0, keep, out=drop)
        tied = tmp.abs_().neg_().add_(1.0).mul_(pos).nonzero().reshape(-1)  # total 0 and P > 0
        if tied.numel():
            alternative = neg[tied] / n_neg[tied].clamp(min=1) if mean else neg[tied]
            indices.append(tied + lo)
            values.append(base[tied] + alternative * scale)
        merged = pos.mul_(keep).add_(neg.mul_(drop))
        if mean:
            merged.div_(n_pos.mul_(keep).add_(n_neg.mul_(drop)).clamp_(min=1))
        out[lo:hi].copy_(merged.mul_(scale).add_(base))
    return (out, sign_sum, torch.cat(indices) if indices else torch.empty(0, dtype=torch.int64),
            torch.cat(values) if values else torch.empty(0))


@dataclass(frozen=True)
class TiesSettings:
    """TIES's settings, typed (`TIES.typed(hp)`): MergeBench's reference values as defaults."""

    K: float = setting(0.3, "fraction of each task vector kept by magnitude", low=0.0, high=1.0)
    lam: float = setting(0.4, "scale of the merged task vector", name="lambda", low=0.0)
    aggregation: str = setting("sum", "sum (reference) or mean (disjoint mean of the TIES paper)",
                               choices=("sum", "mean"))
    scope: str = setting("global", "trim threshold over the whole parameter set or per tensor",
                         choices=("global", "tensor"))
    threshold_set: str = setting("reference",
                                 "entries the global threshold ranks: reference = every tensor whose name lacks "
                                 "'embed' (an untied lm_head included), merged = only the merged tensors",
                                 choices=("reference", "merged"))


TIES = MethodSpec(
    "ties",
    "TIES: trim to top-K by magnitude, elect signs, merge agreeing entries",
    ties,
    settings_type=TiesSettings,
    global_rank=ties_rank,
    with_sign=ties_with_sign,
    with_sign_pieces=ties_with_sign_pieces,
    reference="Yadav et al. 2023",
    elementwise=lambda hp: hp["scope"] == "global",
)
