"""Model soup and task arithmetic: scaled sums of task vectors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mergebench.merging.methods.spec import MethodSpec, TensorContext, setting, sum_in_order


def soup(tau: torch.Tensor, ctx: TensorContext, *, lam: float | None = None) -> torch.Tensor:
    """θ0 + λ·Σ τ_t with λ = 1/T by default: the element-wise mean of the specialists."""
    return sum_in_order(tau) * soup_scale(lam, tau.shape[0])


def soup_scale(lam: float | None, experts: int) -> float:
    return 1.0 / experts if lam is None else lam


def task_arithmetic(tau: torch.Tensor, ctx: TensorContext, *, lam: float = 0.4) -> torch.Tensor:
    """θ0 + λ·Σ τ_t."""
    return sum_in_order(tau) * lam


@dataclass(frozen=True)
class SoupSettings:
    lam: float | None = setting(None, "scale of the summed task vectors; default 1/T (the mean; 0.2 for T=5)",
                                name="lambda", low=0.0)


@dataclass(frozen=True)
class TaskArithmeticSettings:
    lam: float = setting(0.4, "scale of the summed task vectors", name="lambda", low=0.0)


SOUP = MethodSpec(
    "soup",
    "Model soup: the average of the specialists",
    lambda tau, ctx, hp: soup(tau, ctx, lam=hp["lambda"]),
    settings_type=SoupSettings,
    reference="Wortsman et al. 2022",
    elementwise=True,
    sum_scale=lambda hp, experts: soup_scale(hp["lambda"], experts),
)
TASK_ARITHMETIC = MethodSpec(
    "task_arithmetic",
    "Task arithmetic: base plus λ times the summed task vectors",
    lambda tau, ctx, hp: task_arithmetic(tau, ctx, lam=hp["lambda"]),
    settings_type=TaskArithmeticSettings,
    reference="Ilharco et al. 2023",
    elementwise=True,
    sum_scale=lambda hp, experts: hp["lambda"],
)
