"""Consensus merging with TALL masks: keep task-arithmetic entries that at least k tasks find relevant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mergebench.errors import MergeBenchError
from mergebench.merging.methods.spec import MethodSpec, TensorContext, setting


def consensus(tau: torch.Tensor, ctx: TensorContext, hp: dict[str, Any]) -> torch.Tensor:
    lambdas = hp["lambda_t"]
    if len(lambdas) == 1:
        lambdas = lambdas * tau.shape[0]
    if len(lambdas) != tau.shape[0]:
        raise MergeBenchError(
            f"method consensus: setting lambda_t has {len(lambdas)} values for {tau.shape[0]} specialists"
        )
    total = tau.sum(0)
    scale = torch.tensor(lambdas, dtype=tau.dtype, device=tau.device).reshape((-1,) + (1,) * (tau.dim() - 1))
    tall = tau.abs() > scale * (total.unsqueeze(0) - tau).abs()
    agree = tall.sum(0) >= hp["k"]
    return total * agree * hp["lambda"]


@dataclass(frozen=True)
class ConsensusSettings:
    lambda_t: list[float] = setting([0.2], "TALL mask threshold per task (one value for all, or one per "
                                    "specialist)", low=0.0)
    k: int = setting(2, "minimum number of agreeing task masks", low=0)
    lam: float = setting(0.4, "scale of the summed task vectors (the reference ignores it)", name="lambda", low=0.0)


CONSENSUS = MethodSpec(
    "consensus",
    "Consensus / TALL masks: task arithmetic restricted to entries ≥ k tasks rely on",
    consensus,
    settings_type=ConsensusSettings,
    reference="Wang et al. 2024",
    elementwise=True,
)
