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
