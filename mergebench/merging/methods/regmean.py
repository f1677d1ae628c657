"""RegMean: per linear layer, the weights that best reproduce every specialist's outputs on its own data.

For a linear layer with HF weight W [out, in] and input Gram G_t = X_tᵀX_t [in, in] of specialist t,
min_W Σ_t ||X_t Wᵀ − X_t W_tᵀ||² gives Wᵀ = (Σ_t G_t)⁻¹ Σ_t G_t W_tᵀ. RegMean regularizes each Gram
towards its diagonal, G̃_t = α·G_t + (1 − α)·diag(G_t) (off-diagonal entries scaled by α); α = 1 is the
plain least-squares solution, α = 0 a per-input-column weighted average.

The solve is affine-invariant, so it runs on task vectors: (Σ G̃_t)⁻¹ Σ G̃_t (θ0 + τ_t)ᵀ = θ0ᵀ +
(Σ G̃_t)⁻¹ Σ G̃_t τ_tᵀ. It runs in fp32 with `torch.linalg.solve`; when Σ G̃_t is singular it falls back
to the pseudo-inverse (the minimum-norm least-squares solution: directions no data reaches keep the
base's weights) and says so in a warning. Tensors without a Gram (norms, biases) are averaged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

from mergebench.catalog.prompts import TEMPLATES
from mergebench.merging.io.stats_store import GRAM
from mergebench.merging.methods.spec import MethodSpec, TensorContext, setting


def regularize(grams: torch.Tensor, alpha: float) -> torch.Tensor:
    """G̃ = α·G + (1 − α)·diag(G), for a stack [T, in, in]."""
    diag = torch.diagonal(grams, dim1=-2, dim2=-1)
    return grams * alpha + torch.diag_embed(diag * (1.0 - alpha))


def solve_spd(a: torch.Tensor, b: torch.Tensor, name: str) -> torch.Tensor:
    """a⁻¹ b in fp32; the pseudo-inverse, with a warning, when a is singular or the solve is not finite."""
    x, info = torch.linalg.solve_ex(a, b)
    if int(info) == 0 and bool(torch.isfinite(x).all()):
        return x
    warnings.warn(f"regmean: the summed Gram of {name} is singular; solved with the pseudo-inverse "
                  "(minimum-norm least squares) instead of torch.linalg.solve", RuntimeWarning, stacklevel=2)
    return torch.linalg.pinv(a, hermitian=True) @ b


def gram_stack(ctx: TensorContext, hp: dict[str, Any]) -> torch.Tensor:
    grams = torch.stack(list(ctx.stats))
    if hp["gram_scale"] == "mean":  # equal weight per specialist, whatever its token count
        tokens = torch.tensor([float(m["tokens"]) for m in ctx.stats_meta], dtype=grams.dtype, device=grams.device)
        grams = grams / tokens.reshape(-1, 1, 1)
    return grams


def regmean(tau: torch.Tensor, ctx: TensorContext, hp: dict[str, Any]) -> torch.Tensor:
    if ctx.stats is None:  # not a linear layer of the decoder
        return tau.mean(0)
    grams = regularize(gram_stack(ctx, hp), hp["alpha"])
    rhs = torch.einsum("tij,toj->io", grams, tau)  # Σ_t G̃_t τ_tᵀ, [in, out]
    return solve_spd(grams.sum(0), rhs, ctx.name).T


GRAM_SCALE_HELP = ("sum: Grams summed over tokens (the least-squares definition; specialists with more tokens "
                   "weigh more); mean: each Gram divided by its token count")


@dataclass(frozen=True)
class RegMeanSettings:
    alpha: float = setting(0.5, "scale of the Grams' off-diagonal entries", low=0.0, high=1.0)
    gram_scale: str = setting("sum", GRAM_SCALE_HELP, choices=("sum", "mean"))


@dataclass(frozen=True)
class RegMeanPlusPlusSettings:
    alpha: float = setting(0.1, "scale of the Grams' off-diagonal entries", low=0.0, high=1.0)
    gram_scale: str = setting("sum", GRAM_SCALE_HELP, choices=("sum", "mean"))
    samples: int = setting(1000, "validation samples per specialist", low=1)
    seed: int = setting(0, "seed of the sample selection")
    max_length: int = setting(2048, "truncate samples to this many tokens", low=2)
    template: str = setting("alpaca", "prompt template the specialists were finetuned with", choices=TEMPLATES)

REGMEAN = MethodSpec(
    "regmean",
    "RegMean: per linear layer, least-squares merge under each specialist's input Gram (needs --stats)",
    regmean,
    settings_type=RegMeanSettings,
    reference="Jin et al. 2023",
    stats_kind=GRAM,
)

REGMEAN_PP = MethodSpec(
    "regmean_pp",
    "RegMean++: RegMean layer by layer on inputs from the merged layers below (needs --data; Llama, Gemma-2)",
    regmean,
    settings_type=RegMeanPlusPlusSettings,
    reference="Nguyen et al. 2025",
    needs_data=True,
)
