"""The entries of a global-sign TIES merge whose value waits for the majority sign (an agreeing sum that is
exactly 0 under +1), kept until the pass ends: if the sign turns out −1 they are patched in the written
shards.

They are appended to two flat buffers that grow geometrically, not kept as one small tensor per row block:
hundreds of long-lived small blocks between each block's freed temporaries fragmented the heap (a 0.5B
merge's heap grew to 533 MB for 128 MB in use, most of it never reused)."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class PendingFixups:
    """(tensor name, flat indices, values under sign −1) in the order added; `len` counts the entries."""

    def __init__(self):
        self._index = torch.empty(0, dtype=torch.int64)
        self._value = torch.empty(0, dtype=torch.float32)
        self._spans: list[tuple[str, int, int]] = []  # (name, start, end) into the buffers
        self._used = 0

    def __len__(self) -> int:
        return self._used

    def add(self, name: str, index: torch.Tensor, values: torch.Tensor) -> None:
        n = index.numel()
        if not n:
            return
        start, end = self._used, self._used + n
        if end > self._index.numel():
            capacity = max(end, 2 * self._index.numel(), 1 << 16)
            self._index = _grown(self._index, capacity, start)
            self._value = _grown(self._value, capacity, start)
        self._index[start:end].copy_(index.reshape(-1))
        self._value[start:end].copy_(values.reshape(-1))
        if self._spans and self._spans[-1][0] == name and self._spans[-1][2] == start:
            self._spans[-1] = (name, self._spans[-1][1], end)  # the next block of the same tensor
        else:
            self._spans.append((name, start, end))
        self._used = end

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        for name, start, end in self._spans:
            yield name, self._index[start:end], self._value[start:end]


def _grown(buffer: torch.Tensor, capacity: int, keep: int) -> torch.Tensor:
    out = torch.empty(capacity, dtype=buffer.dtype)
    out[:keep].copy_(buffer[:keep])
    return out
