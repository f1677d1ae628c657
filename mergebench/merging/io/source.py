"""Task vectors read from checkpoints: the one place a merge (or anything that needs τ = θ_t − θ_0) reads
weights. It owns the reused read buffers, the row blocks large tensors are read in, the move to the
device and the finiteness check; the streaming engine, RegMean++'s layer executor, the global thresholds
and Localize-and-Stitch's mask training all read through it."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys

import torch

from mergebench.errors import MergeBenchError
from mergebench.merging.io.checkpoint import Checkpoint, mapped_range

# Entries per block when a large tensor is read a block of rows at a time. A block's temporaries ([T, block]
# fp32, 20 MiB for five specialists) stay below glibc's largest mmap threshold, so with `reuse_freed_memory`
# they come from memory the process already has instead of fresh pages the kernel must fault in and zero
# (at 4 Mi entries that cost more than the arithmetic: 61 s of system time in a 0.5B TIES merge).
BLOCK_ELEMENTS = 2**20
# Entries per piece of a streamed scaled sum (scaled_sum): its three fp32 work buffers (3 MiB) stay in the
# CPU's caches between the passes over them. Measured over a 0.5B model, base + 5, in a bare loop (2-core
# EPYC, 512 KiB L2, 32 MiB L3): 2**18 took 2.1 s, 2**19 2.8 s, the [T, block] task vectors 4.0 s.
PIECE_ELEMENTS = 2**18

Block = tuple[int, int] | None  # rows [start, end) of a tensor, or None: all of it


@functools.cache
def reuse_freed_memory() -> bool:
    """Ask glibc to keep freed blocks of up to 32 MiB in the heap for reuse (a fixed mmap threshold and a
    high trim threshold) instead of returning them to the kernel after every tensor. Results do not
    change; elsewhere than glibc on Linux nothing is done."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(libc.mallopt(m_trim_threshold, 512 * 2**20))
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False


class TaskVectorSource:
    """θ_0 and the stacked τ of `experts` against `base`, tensor by tensor (or a block of rows), in fp32
    on `device`. The returned tensors are views of reused buffers on the CPU: valid until the next read."""

    def __init__(self, base: Checkpoint, experts: list[Checkpoint], device: torch.device):
        self.base, self.experts, self.device = base, experts, device
        self._buffers: dict[str, torch.Tensor] = {}
        reuse_freed_memory()

    def _buffer(self, role: str, shape) -> torch.Tensor:
        """A reused fp32 CPU buffer viewed as `shape`: fresh large allocations cost a page fault per 4 KiB
        (the kernel zeroes each page), which dominated the merge's time before buffers were kept."""
        numel = torch.Size(shape).numel()
        if role not in self._buffers or self._buffers[role].numel() < numel:
            self._buffers[role] = torch.empty(numel, dtype=torch.float32)
        return self._buffers[role][:numel].view(shape)

    def blocks(self, name: str, elementwise: bool) -> list[Block]:
        """Row blocks of about BLOCK_ELEMENTS entries for a large tensor merged element-wise (so peak
        memory does not grow with the largest tensor, an embedding merged with --include); else one
        block, the whole tensor (None)."""
        info = self.base.tensors[name]
        if not elementwise or len(info.shape) < 2 or info.numel <= BLOCK_ELEMENTS:
            return [None]
        rows = max(1, BLOCK_ELEMENTS // (info.numel // info.shape[0]))
        return [(r, min(r + rows, info.shape[0])) for r in range(0, info.shape[0], rows)]

    def count(self, names: list[str]) -> int:
        """Entries in the named tensors (of the base)."""
        return sum(self.base.tensors[n].numel for n in names)

    def first(self, name: str, block: Block) -> int:
        """The flat index of the block's first entry in the tensor."""
        info = self.base.tensors[name]
        return 0 if block is None else block[0] * (info.numel // info.shape[0])

    def shape(self, name: str, block: Block) -> tuple[int, ...]:
        """The shape of the tensor's block of rows (of the whole tensor when `block` is None)."""
        shape = self.base.tensors[name].shape
        return shape if block is None else (block[1] - block[0], *shape[1:])

    def task_vectors(self, name: str, block: Block = None) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 base tensor (or a block of its rows) and stacked task vectors [T, ...] on the device; a
        one-line error naming the checkpoint when an input is not finite."""
        shape = self.shape(name, block)
        first = self.first(name, block)
        base = self.base.read_into(name, self._buffer("base", shape), first)
        tau = self._buffer("tau", (len(self.experts), *shape))
        for t, e in enumerate(self.experts):
            e.read_into(name, tau[t], first)
        base, tau = base.to(self.device), tau.to(self.device)
        tau -= base
        # NaN and ±inf survive subtraction and summation, so one reduction covers all T+1 inputs; the
        # culprit is looked for only when it is not finite.
        if not bool(torch.isfinite(tau.sum() + base.sum())):
            for ckpt in [self.base, *self.experts]:  # each input read again: τ + θ_0 may overflow where neither does
                if not bool(torch.isfinite(ckpt.read_into(name, torch.empty(shape), first)).all()):
                    raise MergeBenchError(f"{ckpt.path}: tensor {name} contains NaN or infinite values")
            if not bool(torch.isfinite(tau).all()):
                raise MergeBenchError(f"tensor {name}: a task vector overflows fp32 (inputs are finite but too far "
                                      "apart)")
        return base, tau

    def pieces(self, name: str, block: Block, check_each: bool = True) -> PieceStream:
        """The tensor (or a block of its rows) as cache-sized pieces straight from the mapped checkpoints,
        for arithmetic that never forms the [T, n] task vectors (CPU only). `check_each=False`: the caller
        passes each piece's result to `PieceStream.check` instead (PieceStream says when that suffices)."""
        return PieceStream(self, name, block, check_each)

    def work(self, count: int, size: int) -> list[torch.Tensor]:
        """`count` reused fp32 work buffers of `size` entries for a streamed computation's accumulators."""
        return [self._buffer(f"work-{i}", (size,)) for i in range(count)]

    def scaled_sum(self, name: str, block: Block, scale: float, dtype: torch.dtype) -> torch.Tensor | None:
        """θ_0 + scale·Σ_t τ_t of a tensor (or a block of its rows) as `dtype`, with τ summed in
        specialist order: the same floats as `base + sum_in_order(tau)·scale` (methods/spec.py) from
        `task_vectors`, computed piece by piece (`pieces`) instead of through the [T, n] task vectors (a
        0.5B task-arithmetic merge: 2.2 s instead of 3.1 s). None when an input or a τ is not finite:
        `task_vectors` then finds the culprit and says which. A new flat tensor."""
        stream = self.pieces(name, block, check_each=False)  # every input reaches the result: one check
        out = torch.empty(stream.count, dtype=dtype)
        (total,) = self.work(1, stream.size)
        for lo, hi, base, taus in stream:
            acc = total[: hi - lo]
            for t, tau in enumerate(taus):
                acc.copy_(tau) if t == 0 else acc.add_(tau)
            out[lo:hi].copy_(stream.check(acc.mul_(scale).add_(base)))
        return out if stream.finite else None


class PieceStream:
    """One tensor (or a block of its rows) of the base and every specialist, mapped once, walked in pieces
    of PIECE_ELEMENTS entries: iterating yields (lo, hi, θ_0[lo:hi] in fp32, an iterator of τ_t[lo:hi]
    for t in specialist order). The pieces are views of reused buffers, each τ_t valid until the next is
    drawn: their few passes stay in the CPU's caches, where the [T, n] task vectors of a row block do not.
    `finite` tells, after a full walk, whether every input and τ was finite (NaN and ±inf survive sums:
    one sum per piece and specialist); when not, the caller falls back to `task_vectors`, which names the
    culprit. A caller whose fp32 result of a piece is not finite whenever an input or a τ of that piece is
    not (sums and products by finite factors keep NaN and ±inf: θ_0 + c·Σ τ_t does) may ask for no sums
    (`check_each=False`) and pass each result to `check`: one sum per piece instead of T + 1. A result
    that overflows where no input does only sends the caller to the plain path, which is always right."""

    def __init__(self, source: TaskVectorSource, name: str, block: Block, check_each: bool = True):
        self.source, self.name, self.check_each = source, name, check_each
        self.first = source.first(name, block)
        self.count = torch.Size(source.shape(name, block)).numel()
        self.size = max(1, min(self.count, PIECE_ELEMENTS))
        self.finite = True
        self._check = torch.zeros(())

    def check(self, result: torch.Tensor) -> torch.Tensor:
        """Count a piece's result in the finiteness check (with `check_each=False`); returns it."""
        self._check += result.sum()
        return result

    def __iter__(self):
        src, name = self.source, self.name
        base_buf, tau_buf = (src._buffer(role, (self.size,)) for role in ("piece-base", "piece-tau"))
        check = self._check
        with contextlib.ExitStack() as maps:
            base, *experts = (maps.enter_context(mapped_range(c.tensors[name], self.first, self.count))
                              for c in (src.base, *src.experts))
            for lo in range(0, self.count, self.size):
                hi = min(lo + self.size, self.count)
                b, tau = base_buf[: hi - lo].copy_(base[lo:hi]), tau_buf[: hi - lo]
                if self.check_each:
                    check += b.sum()
                yield lo, hi, b, self._taus(experts, lo, hi, b, tau, check if self.check_each else None)
            del base, experts  # so the maps close here
        self.finite = bool(torch.isfinite(check))

    @staticmethod
    def _taus(experts, lo, hi, b, tau, check):
        for e in experts:
            if e.dtype == torch.float32:
                torch.sub(e[lo:hi], b, out=tau)
            else:  # converted first: a mixed-dtype sub costs 3-4× a copy and a sub (2**18 bf16: ~90 µs vs ~28)
                tau.copy_(e[lo:hi]).sub_(b)
            if check is not None:
                check += tau.sum()
            yield tau
