"""The store of TIES entries that wait for the majority sign: what goes in comes out, per tensor, in order."""

import torch

from mergebench.merging.sign_fixups import PendingFixups


def test_fixups_come_back_per_tensor_in_order_across_growth():
    """Blocks of one tensor added one after another come back as one span; another tensor between them
    starts a new span; contents survive the buffers' growth past their first capacity (65536 entries)."""
    gen = torch.Generator().manual_seed(0)
    store = PendingFixups()
    added = []
    for name, n in [("a", 5), ("a", 40000), ("b", 0), ("b", 30000), ("a", 3), ("c", 70000)]:
        index = torch.randint(0, 1 << 40, (n,), generator=gen)
        values = torch.randn(n, generator=gen)
        store.add(name, index, values)
        added.append((name, index, values))
    assert len(store) == 140008
    got = [(name, index.clone(), values.clone()) for name, index, values in store]
    assert [(name, index.numel()) for name, index, _ in got] == [("a", 40005), ("b", 30000), ("a", 3), ("c", 70000)]
    want_index = torch.cat([i for _, i, _ in added])
    want_values = torch.cat([v for _, _, v in added])
    assert torch.equal(torch.cat([i for _, i, _ in got]), want_index)
    assert torch.equal(torch.cat([v for _, _, v in got]), want_values)
    assert got[0][2].dtype == torch.float32 and got[0][1].dtype == torch.int64


def test_an_empty_store_yields_nothing():
    store = PendingFixups()
    store.add("a", torch.empty(0, dtype=torch.int64), torch.empty(0))
    assert len(store) == 0 and list(store) == []
