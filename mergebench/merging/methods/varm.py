"""FuseChat's VaRM: weight each specialist's matrix by its share of the mean squared update."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mergebench.merging.methods.spec import MethodSpec, TensorContext


def varm(tau: torch.Tensor, ctx: TensorContext, hp: dict[str, Any]) -> torch.Tensor:
    """Σ_t w_t τ_t with w_t = mean(τ_t²) / Σ_s mean(τ_s²); equal weights when nothing changed."""
    energy = tau.reshape(tau.shape[0], -1).pow(2).mean(1)
    total = energy.sum()
    weights = energy / total if total > 0 else torch.full_like(energy, 1.0 / tau.shape[0])
    return torch.tensordot(weights, tau, dims=1)


@dataclass(frozen=True)
class VarmSettings:
    """VaRM has no settings: its weights come from the task vectors alone."""


VARM = MethodSpec(
    "varm",
    "FuseChat VaRM: per-matrix weights from the variation ratio of each specialist",
    varm,
    settings_type=VarmSettings,
    reference="Wan et al. 2024 (FuseChat)",
)
