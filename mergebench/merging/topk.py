"""Exact global k-th largest |τ| per specialist, streamed, without sorting or flattening the model.

Non-negative fp32 values order exactly like their bit patterns read as int32. A first pass counts the
high 16 bits of every |τ| (32768 bins, since the sign bit is 0); the bin holding the k-th largest is
then resolved by a second pass that counts the low 16 bits of the entries in that bin alone. Memory is
two small histograms per specialist; the answer is the exact float the full sort would give.

The second pass reads the whole model again. When a sample has told beforehand which few high bins the
k-th largest will fall in (`watch`), the first pass also counts the low bits of the entries in those
bins, and a threshold found inside them needs no second pass; outside them the second pass runs as
before, so the result never depends on the sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

HIGH_BINS = 1 << 15
LOW_BINS = 1 << 16
MAX_WINDOW = 8  # high bins a watched window may span (its low-bit counts: 4 MiB per specialist)


def _bits(tau: torch.Tensor) -> torch.Tensor:
    return tau.abs().reshape(tau.shape[0], -1).contiguous().view(torch.int32)


class GlobalThreshold:
    """Accumulates the two histogram passes for T specialists and yields per-specialist thresholds."""

    def __init__(self, n_specialists: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.high = torch.zeros(n_specialists, HIGH_BINS, dtype=torch.int64, device=self.device)
        self.low = torch.zeros(n_specialists, LOW_BINS, dtype=torch.int64, device=self.device)
        self.ranks: list[int] | None = None
        self._bin: list[int] = []
        self._above: list[int] = []
        self._windows: list[tuple[int, int] | None] = [None] * n_specialists
        self._window_low: list[torch.Tensor | None] = [None] * n_specialists
        self._resolved: list[bool] = [False] * n_specialists

    def watch(self, windows: list[tuple[int, int] | None]) -> None:
        """Before the first pass: per specialist, the high bins [first, last] (at most MAX_WINDOW of them)
        whose entries' low bits the first pass counts too, or None."""
        for t, window in enumerate(windows):
            if window is None or not 0 <= window[0] <= window[1] < HIGH_BINS or window[1] - window[0] >= MAX_WINDOW:
                continue
            self._windows[t] = window
            self._window_low[t] = torch.zeros((window[1] - window[0] + 1) * LOW_BINS, dtype=torch.int64,
                                              device=self.device)

    @property
    def count(self) -> int:
        """Entries seen per specialist (d)."""
        return int(self.high[0].sum())

    def first_pass(self, tau: torch.Tensor) -> None:
        bits = _bits(tau)
        for t in range(bits.shape[0]):
            high = bits[t] >> 16
            self.high[t] += torch.bincount(high, minlength=HIGH_BINS)
            window = self._windows[t]
            if window is not None:
                inside = bits[t][(high >= window[0]) & (high <= window[1])]
                if inside.numel():  # counted up to the largest key only: narrow when the entries sit low
                    counts = torch.bincount(inside - (window[0] << 16))
                    self._window_low[t][: counts.numel()] += counts

    def choose(self, ranks: list[int]) -> None:
        """After the first pass: locate, per specialist, the high bin that holds its rank-th largest."""
        self.ranks = ranks
        self._bin, self._above = [], []
        for t, rank in enumerate(ranks):
            counts = self.high[t].flip(0).cumsum(0).flip(0)  # counts[b] = entries with high bits ≥ b
            if rank <= 0 or rank > int(counts[0]):
                self._bin.append(-1)
                self._above.append(0)
                continue
            b = int((counts >= rank).nonzero().max())
            self._bin.append(b)
            self._above.append(int(counts[b + 1]) if b + 1 < HIGH_BINS else 0)
            window = self._windows[t]
            if window is not None and window[0] <= b <= window[1]:  # the first pass counted its low bits
                self.low[t] = self._window_low[t].view(-1, LOW_BINS)[b - window[0]]
                self._resolved[t] = True

    @property
    def needs_second_pass(self) -> bool:
        return any(b >= 0 and not done for b, done in zip(self._bin, self._resolved, strict=True))

    def second_pass(self, tau: torch.Tensor) -> None:
        bits = _bits(tau)
        for t, b in enumerate(self._bin):
            if b < 0 or self._resolved[t]:
                continue
            row = bits[t]
            inside = row[(row >> 16) == b]
            if inside.numel():
                self.low[t] += torch.bincount(inside & 0xFFFF, minlength=LOW_BINS)

    def thresholds(self) -> torch.Tensor:
        """Per specialist: the exact rank-th largest |τ| (rank 0: +inf, keeps nothing; rank > d: 0)."""
        assert self.ranks is not None, "choose() must run first"
        out = []
        for t, (rank, b) in enumerate(zip(self.ranks, self._bin, strict=True)):
            if b < 0:
                out.append(float("inf") if rank <= 0 else 0.0)
                continue
            need = rank - self._above[t]  # rank within the bin, counted from its top
            counts = self.low[t].flip(0).cumsum(0).flip(0)
            low = int((counts >= need).nonzero().max())
            pattern = torch.tensor([(b << 16) | low], dtype=torch.int32)
            out.append(float(pattern.view(torch.float32)))
        return torch.tensor(out, dtype=torch.float32)


def streamed_thresholds(parts: Callable[[], Iterable[tuple[int, torch.Tensor]]], rows: int, rank: Callable[[int], int],
                        device: torch.device | str, progress: Callable[[str, int, int], None], total: int,
                        phase: str = "thresholds", windows: list[tuple[int, int] | None] | None = None) -> torch.Tensor:
    """Per row, the exact rank(d)-th largest |value| over everything `parts()` yields: (index of the tensor
    the part belongs to, then a [rows, ...] part), read once, and a second time where the rank's bin needs
    it and lies outside the row's watched `windows`. `progress(phase, tensors done, total)` follows both
    passes."""
    acc = GlobalThreshold(rows, device)
    if windows is not None:
        acc.watch(windows)
    for i, values in parts():
        acc.first_pass(values)
        progress(f"{phase} 1/2", i + 1, total)
    acc.choose([rank(acc.count)] * rows)
    if acc.needs_second_pass:
        for i, values in parts():
            acc.second_pass(values)
            progress(f"{phase} 2/2", i + 1, total)
    return acc.thresholds()


def _below(bits: int) -> float:
    """The float just below the non-negative fp32 whose bit pattern is `bits` (+inf past the finite ones)."""
    edge = torch.tensor([min(bits, 0x7F800000)], dtype=torch.int32).view(torch.float32)
    return float(torch.nextafter(edge, torch.zeros(1)))


class WindowedThreshold:
    """The exact k-th largest |τ| per specialist in a single pass, when a sample has said in which high
    bins [first, last] each threshold falls: the pass counts the entries above each window and keeps the
    bit patterns of those inside it (a fraction of a percent of a real model's entries); `thresholds`
    then finds the k-th among them, or gives None where the sample was wrong and the plain passes must
    run. No full histogram is built, and the pass is a few cache-resident float operations per piece
    (TaskVectorSource.pieces). A window starting at bin 0 is not taken (zeros would not be kept)."""

    FLUSH = 1 << 20  # kept patterns per specialist counted into the window's histogram at once

    def __init__(self, windows: list[tuple[int, int]]):
        self.windows = windows
        self.usable = all(0 < w[0] <= w[1] < HIGH_BINS and w[1] - w[0] < MAX_WINDOW for w in windows)
        edges = [(w[0] << 16, (w[1] + 1) << 16) for w in windows] if self.usable else []
        # threshold keeps x > λ: with λ the float just below an edge, it keeps x ≥ the edge.
        self._low = [lo for lo, _ in edges]
        self._below_low = [_below(lo) for lo, _ in edges]
        self._below_top = [_below(top) for _, top in edges]
        self.above = [0] * len(windows)
        self.inside = [0] * len(windows)
        # Kept patterns wait in one preallocated buffer per specialist, not in a list of small tensors: small
        # long-lived blocks between each piece's freed temporaries fragmented the heap (1 GB of a 0.5B merge).
        self._kept = [torch.empty(self.FLUSH, dtype=torch.int32) for _ in windows] if self.usable else []
        self._fill = [0] * len(windows)
        self._scratch = torch.empty(0)  # reused for each piece's two thresholded copies
        self._counts = [torch.zeros((w[1] - w[0] + 1) * LOW_BINS, dtype=torch.int64) for w in windows] if self.usable else []

    def add(self, t: int, magnitude: torch.Tensor) -> None:
        """Count a piece of |τ_t| (fp32, flat); nothing when the windows are not usable."""
        if not self.usable:
            return
        if self._scratch.numel() < 2 * magnitude.numel():
            self._scratch = torch.empty(2 * magnitude.numel(), dtype=torch.float32)
        top, inside = self._scratch[: 2 * magnitude.numel()].view(2, -1)
        torch.threshold(magnitude, self._below_top[t], 0.0, out=top)
        self.above[t] += int(torch.sign(top, out=inside).sum())  # 3× faster than count_nonzero here
        torch.threshold(magnitude, self._below_low[t], 0.0, out=inside).sub_(top)  # low ≤ |τ| < top, else 0
        kept = inside[inside.nonzero().reshape(-1)].view(torch.int32)
        n, fill = kept.numel(), self._fill[t]
        self.inside[t] += n
        if fill + n > self.FLUSH:
            self._flush(t)
            fill = 0
        if n > self.FLUSH:  # a piece larger than the buffer: counted at once
            self._count(t, kept.sub_(self._low[t]))
            return
        self._kept[t][fill : fill + n].copy_(kept).sub_(self._low[t])
        self._fill[t] = fill + n

    def _flush(self, t: int) -> None:
        if self._fill[t]:
            self._count(t, self._kept[t][: self._fill[t]])
            self._fill[t] = 0

    def _count(self, t: int, offsets: torch.Tensor) -> None:
        # A NaN or ±inf τ passes for inside (NaN − NaN); its pattern is far outside the window (or negative):
        # clamped, it cannot make bincount allocate gigabytes or fail. The pass is then discarded anyway
        # (its stream is not finite) and the plain passes name the input.
        counts = torch.bincount(offsets.clamp_(0, self._counts[t].numel() - 1))
        self._counts[t][: counts.numel()] += counts

    def thresholds(self, rank: int) -> torch.Tensor | None:
        """Per specialist the exact rank-th largest |τ|, or None when some rank lies outside its window."""
        if not self.usable:
            return None
        out = []
        for t in range(len(self.windows)):
            need = rank - self.above[t]  # rank within the window, counted from its top
            if not 0 < need <= self.inside[t]:
                return None
            self._flush(t)
            counts = self._counts[t].flip(0).cumsum(0).flip(0)
            pattern = self._low[t] + int((counts >= need).nonzero().max())
            out.append(float(torch.tensor([pattern], dtype=torch.int32).view(torch.float32)))
        return torch.tensor(out, dtype=torch.float32)
