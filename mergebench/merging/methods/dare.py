"""DARE: drop each task-vector entry with probability p, rescale survivors by 1/(1−p), then sum.

The drop mask of a (tensor, specialist) pair comes from a generator seeded by (seed, tensor name,
specialist label), drawn on the CPU: results do not depend on tensor order, shard layout, specialist
order or device. A large tensor is merged a block of rows at a time: its generators carry on from block
to block (torch's CPU generator gives the same numbers drawn in pieces as drawn at once), so the masks
are the whole tensor's, and the specialists' masks are drawn side by side on the CPU's cores.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from mergebench.merging.methods.spec import MethodSpec, TensorContext, setting


def mask_seed(seed: int, tensor: str, label: str) -> int:
    digest = hashlib.sha256(f"{seed}\0{tensor}\0{label}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def keep_mask(shape: torch.Size, keep: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen) < keep


class _Streams:
    """The generators of the tensor being merged, one per specialist, each at the entry it has reached."""

    def __init__(self):
        self.tensor: tuple[int, str] | None = None
        self.at: dict[str, tuple[torch.Generator, int]] = {}
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)))

    def begin(self, seed: int, tensor: str) -> None:
        """Called before a block's masks are drawn (by one thread): a new tensor drops the last one's."""
        if self.tensor != (seed, tensor):
            self.tensor, self.at = (seed, tensor), {}

    def mask(self, seed: int, tensor: str, label: str, offset: int, shape: torch.Size, keep: float) -> torch.Tensor:
        gen, position = self.at.get(label, (None, -1))
        if position != offset:  # a new tensor, or blocks out of order: from the start, skipping to the block
            gen, position = torch.Generator().manual_seed(mask_seed(seed, tensor, label)), 0
            while position < offset:
                step = min(offset - position, 1 << 22)
                torch.rand(step, generator=gen)
                position += step
        mask = torch.rand(shape, generator=gen) < keep
        self.at[label] = (gen, position + mask.numel())
        return mask


_STREAMS = _Streams()


def dare(tau: torch.Tensor, ctx: TensorContext, hp: dict[str, Any]) -> torch.Tensor:
    keep = 1.0 - hp["p"]
    seed = hp["seed"]
    _STREAMS.begin(seed, ctx.name)
    masks = list(_STREAMS.pool.map(
        lambda label: _STREAMS.mask(seed, ctx.name, label, ctx.offset, tau.shape[1:], keep), ctx.labels))
    out = torch.zeros_like(tau[0])
    for t, mask in enumerate(masks):
        out += tau[t] * mask.to(tau.device)
    return out * (hp["lambda"] / keep)


@dataclass(frozen=True)
class DareSettings:
    p: float = setting(0.9, "drop probability", low=0.0, high=0.999999)
    lam: float = setting(0.4, "scale of the summed task vectors", name="lambda", low=0.0)
    seed: int = setting(0, "seed of the drop masks (the reference sets none)")


DARE = MethodSpec(
    "dare",
    "DARE: random drop with rescale, then task arithmetic",
    dare,
    settings_type=DareSettings,
    reference="Yu et al. 2024",
    elementwise=True,
)
