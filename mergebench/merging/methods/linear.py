"""Model soup and task arithmetic: scaled sums of task vectors."""

from __future__ import annotations

import torch

from mergebench.merging.methods.spec import MethodSpec, Param, TensorContext


def soup(tau: torch.Tensor, ctx: TensorContext, *, lam: float | None = None) -> torch.Tensor:
    """θ0 + λ·Σ τ_t with λ = 1/T by default: the element-wise mean of the specialists."""
    scale = 1.0 / tau.shape[0] if lam is None else lam
    return tau.sum(0) * scale


def task_arithmetic(tau: torch.Tensor, ctx: TensorContext, *, lam: float = 0.4) -> torch.Tensor:
    """θ0 + λ·Σ τ_t."""
    return tau.sum(0) * lam


LAMBDA = Param("lambda", float, 0.4, "scale of the summed task vectors", low=0.0)

SOUP = MethodSpec(
    "soup",
    "Model soup: the average of the specialists",
    lambda tau, ctx, hp: soup(tau, ctx, lam=hp["lambda"]),
    (Param("lambda", float, None, "scale of the summed task vectors; default 1/T (the mean; 0.2 for T=5)",
           low=0.0, optional=True),),
    reference="Wortsman et al. 2022",
    elementwise=True,
)
TASK_ARITHMETIC = MethodSpec(
    "task_arithmetic",
    "Task arithmetic: base plus λ times the summed task vectors",
    lambda tau, ctx, hp: task_arithmetic(tau, ctx, lam=hp["lambda"]),
    (LAMBDA,),
    reference="Ilharco et al. 2023",
    elementwise=True,
)
