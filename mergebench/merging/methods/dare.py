"""DARE: drop each task-vector entry with probability p, rescale survivors by 1/(1−p), then sum.

The drop mask of a (tensor, specialist) pair comes from a generator seeded by (seed, tensor name,
specialist label), drawn on the CPU: results do not depend on tensor order, shard layout, specialist
order or device.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from mergebench.merging.methods.spec import MethodSpec, Param, TensorContext


def mask_seed(seed: int, tensor: str, label: str) -> int:
    digest = hashlib.sha256(f"{seed}\0{tensor}\0{label}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def keep_mask(shape: torch.Size, keep: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen) < keep


def dare(tau: torch.Tensor, ctx: TensorContext, hp: dict[str, Any]) -> torch.Tensor:
    keep = 1.0 - hp["p"]
    seed = hp["seed"]
    out = torch.zeros_like(tau[0])
    for t, label in enumerate(ctx.labels):
        mask = keep_mask(tau.shape[1:], keep, mask_seed(seed, ctx.name, label)).to(tau.device)
        out += tau[t] * mask
    return out * (hp["lambda"] / keep)


DARE = MethodSpec(
    "dare",
    "DARE: random drop with rescale, then task arithmetic",
    dare,
    (
        Param("p", float, 0.9, "drop probability", low=0.0, high=0.999999),
        Param("lambda", float, 0.4, "scale of the summed task vectors", low=0.0),
        Param("seed", int, 0, "seed of the drop masks (the reference sets none)"),
    ),
    reference="Yu et al. 2024",
)
