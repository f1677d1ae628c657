"""Fisher merging: per entry, the specialists' weights averaged with their diagonal Fisher as weights.

θ = Σ_t F̃_t θ_t / Σ_t F̃_t, which on task vectors is θ0 + Σ_t F̃_t τ_t / Σ_t F̃_t. F̃_t = max(F_t, ε):
the floor ε keeps entries no sample's gradient reaches defined (they get the plain average). With
`normalize`, each specialist's Fisher is first divided by its mean over all parameters (recorded by
the statistics pass), so specialists whose losses have different scales weigh alike and ε is relative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mergebench.merging.io.stats_store import FISHER as FISHER_STATS
from mergebench.merging.methods.spec import MethodSpec, TensorContext, setting


def fisher(tau: torch.Tensor, ctx: TensorContext, hp: dict[str, Any]) -> torch.Tensor:
    weights = torch.stack(list(ctx.stats))
    if hp["normalize"]:
        means = torch.tensor([float(m["mean"]) or 1.0 for m in ctx.stats_meta], dtype=weights.dtype,
                             device=weights.device)
        weights = weights / means.reshape((-1,) + (1,) * (weights.dim() - 1))
    weights = weights.clamp(min=hp["epsilon"])
    return (weights * tau).sum(0) / weights.sum(0)


@dataclass(frozen=True)
class FisherSettings:
    epsilon: float = setting(1e-6, "floor of the Fisher values (entries below it count as epsilon)", low=0.0)
    normalize: bool = setting(False, "divide each specialist's Fisher by its mean over all parameters first")


FISHER = MethodSpec(
    "fisher",
    "Fisher merging: entry-wise average weighted by each specialist's diagonal Fisher (needs --stats)",
    fisher,
    settings_type=FisherSettings,
    reference="Matena & Raffel 2022",
    stats_kind=FISHER_STATS,
)
