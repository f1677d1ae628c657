"""The streaming two-pass histogram gives exactly what a global kthvalue over the flat vector gives."""

from __future__ import annotations

import pytest
import torch

from mergebench.merging.topk import GlobalThreshold


def _chunks(gen):
    # Several "tensors" of different shapes, with repeated values (ties) and exact zeros.
    a = torch.randn(2, 300, generator=gen) * 1e-3
    b = torch.round(torch.randn(2, 40, 17, generator=gen) * 50) / 1024
    c = torch.zeros(2, 64)
    d = torch.randn(2, 5, generator=gen) * 1e3
    return [a, b, c, d]


@pytest.mark.parametrize("rank", [0, 1, 2, 100, 777, 1234, 1753, 1754])
def test_histogram_threshold_equals_global_kthvalue(rank):
    gen = torch.Generator().manual_seed(rank)
    chunks = _chunks(gen)
    acc = GlobalThreshold(2)
    for c in chunks:
        acc.first_pass(c)
    d = acc.count
    assert d == 300 + 40 * 17 + 64 + 5
    acc.choose([rank, rank])
    for c in chunks:
        acc.second_pass(c)
    got = acc.thresholds()
    flat = torch.cat([c.reshape(2, -1) for c in chunks], 1).abs()
    for t in range(2):
        if rank == 0:
            assert got[t] == float("inf")
        elif rank > d:
            assert got[t] == 0
        else:
            assert got[t] == flat[t].kthvalue(d - rank + 1).values
            assert int((flat[t] >= got[t]).sum()) >= rank > int((flat[t] > got[t]).sum())


def _bin_of(value: torch.Tensor) -> int:
    return int(value.float().reshape(1).view(torch.int32) >> 16)


@pytest.mark.parametrize("rank", [1, 100, 777, 1000, 1049])
def test_a_watched_window_resolves_the_threshold_in_the_first_pass(rank):
    """Specialist 0 watches a window around its threshold's bin (no second pass needed for it), specialist 1
    one that misses it (resolved by the second pass as before): both exact, and only one second pass runs."""
    gen = torch.Generator().manual_seed(rank)
    chunks = _chunks(gen)
    flat = torch.cat([c.reshape(2, -1) for c in chunks], 1).abs()
    d = flat.shape[1]
    want = [flat[t].kthvalue(d - rank + 1).values for t in range(2)]
    b0, b1 = _bin_of(want[0]), _bin_of(want[1])
    acc = GlobalThreshold(2)
    acc.watch([(max(b0 - 2, 0), b0 + 1), (b1 + 1, b1 + 3)])
    for c in chunks:
        acc.first_pass(c)
    acc.choose([rank, rank])
    assert acc.needs_second_pass
    second = []
    for c in chunks:
        second.append(c)
        acc.second_pass(c)
    assert acc.thresholds().tolist() == [float(w) for w in want]

    both = GlobalThreshold(2)
    both.watch([(b0, b0), (max(b1 - 3, 0), b1 + 3)])
    for c in chunks:
        both.first_pass(c)
    both.choose([rank, rank])
    assert not both.needs_second_pass
    assert both.thresholds().tolist() == [float(w) for w in want]


@pytest.mark.parametrize("offsets", [(-4, 4), (0, None)], ids=["too-wide", "out-of-range"])
def test_windows_too_wide_or_out_of_range_are_not_watched(offsets):
    """A window that holds the threshold's bin but is wider than MAX_WINDOW, or reaches past the last bin,
    is ignored: the second pass still runs."""
    from mergebench.merging.topk import HIGH_BINS, MAX_WINDOW

    gen = torch.Generator().manual_seed(0)
    chunks = [c[:1] for c in _chunks(gen)]
    flat = torch.cat([c.reshape(1, -1) for c in chunks], 1).abs()
    rank = 100
    b = _bin_of(flat[0].kthvalue(flat.shape[1] - rank + 1).values)
    low, high = offsets
    window = (b + low * MAX_WINDOW, b + high * MAX_WINDOW) if high is not None else (b, HIGH_BINS)
    acc = GlobalThreshold(1)
    acc.watch([window])
    for c in chunks:
        acc.first_pass(c)
    acc.choose([rank])
    assert acc.needs_second_pass


def _windowed(chunks, windows, rank, flush=None):
    from mergebench.merging.topk import WindowedThreshold

    acc = WindowedThreshold(windows)
    if flush is not None:
        acc.FLUSH = flush
    for c in chunks:
        for t, row in enumerate(c.reshape(c.shape[0], -1)):
            acc.add(t, row.abs().contiguous())
    return acc.thresholds(rank)


@pytest.mark.parametrize("rank", [1, 100, 777, 960])  # thresholds above 0 (64 of the 1049 entries are 0)
def test_one_windowed_pass_gives_the_exact_threshold_or_none(rank):
    """With windows that hold each threshold's bin, one pass gives exactly the global kthvalue (patterns
    counted in several flushes or one); a window that misses for either specialist, or starts at bin 0,
    gives None, and the plain passes decide."""
    gen = torch.Generator().manual_seed(rank)
    chunks = _chunks(gen)
    flat = torch.cat([c.reshape(2, -1) for c in chunks], 1).abs()
    d = flat.shape[1]
    want = [float(flat[t].kthvalue(d - rank + 1).values) for t in range(2)]
    b0, b1 = _bin_of(torch.tensor(want[0])), _bin_of(torch.tensor(want[1]))
    for flush in (1, 7, 50, None):  # every piece counted at once, buffered across pieces, or both
        assert _windowed(chunks, [(b0 - 2, b0 + 1), (b1, b1)], rank, flush).tolist() == want
    assert _windowed(chunks, [(b0 - 2, b0 + 1), (b1 + 1, b1 + 3)], rank) is None  # above specialist 1's
    assert _windowed(chunks, [(b0 - 3, b0 - 1), (b1, b1)], rank) is None  # below specialist 0's
    assert _windowed(chunks, [(0, 0), (b1, b1)], rank) is None


def test_magnitudes_that_are_not_finite_cannot_break_the_windowed_count():
    """NaN, −NaN and inf magnitudes (a τ that is not finite, met before its stream's check says so) pass for
    entries inside the window with patterns far outside it (−NaN's negative): counted in flushes they
    must neither fail nor size the histogram by them (−NaN made bincount raise); the pass is discarded
    afterwards anyway, and the finite entries are still counted exactly."""
    from mergebench.merging.topk import WindowedThreshold

    finite = torch.tensor([0.25, 0.2505, 0.251, 0.2515])
    bad = torch.tensor([float("nan"), -float("nan"), float("inf")])
    window = (_bin_of(finite[0]), _bin_of(finite[-1]))
    for flush in (1, 4, None):
        acc = WindowedThreshold([window])
        if flush is not None:
            acc.FLUSH = flush
        acc.add(0, torch.cat([finite, bad]))
        acc.add(0, finite.clone())
        acc.thresholds(1)  # a value or None, which the caller discards: but no failure
        assert acc.inside == [2 * len(finite) + 3]  # NaN, −NaN and inf (inf − inf) all passed for inside
    clean = WindowedThreshold([window])
    clean.add(0, finite)
    assert clean.thresholds(2).tolist() == [float(finite[2])]
