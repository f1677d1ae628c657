"""Every method against the slow reference, and the exact identities the definitions imply."""

from __future__ import annotations

import pytest
import torch
from reference_merge import is_merged, load_all, reference

from mergebench.merging.run import MergeJob, merge

CASES = [
    ("soup", {}),
    ("task_arithmetic", {"lambda": 0.4}),
    ("ties", {"K": 0.3, "lambda": 0.4}),
    ("ties", {"K": 0.2, "lambda": 0.7, "aggregation": "mean"}),
    ("dare", {"p": 0.9, "lambda": 0.4, "seed": 3}),
    ("consensus", {"lambda_t": 0.2, "k": 2, "lambda": 0.4}),
    ("localize_stitch", {"sparsity": 0.1}),
    ("varm", {}),
]


@pytest.mark.parametrize("kind", ["llama", "llama-tied", "gemma2"])
@pytest.mark.parametrize("method,hp", CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CASES)])
def test_engine_matches_slow_reference(families, tmp_path, kind, method, hp):
    base, experts = families[kind]
    result = merge(MergeJob(method, str(base), [str(e) for e in experts], str(tmp_path / "out"), settings=hp))
    got = load_all(result.out)
    want = reference(method, base, experts, {**hp, "labels": [e.name for e in experts]})
    base_t = load_all(base)
    assert set(got) == set(base_t)
    for name, tensor in got.items():
        if is_merged(name):
            torch.testing.assert_close(tensor, want[name], rtol=0, atol=1e-6, msg=f"{method} {name}")
            assert not torch.equal(tensor, base_t[name]) or method == "localize_stitch"
        else:  # embeddings and lm_head stay the base's, bit for bit
            assert torch.equal(tensor, base_t[name]), name


def test_soup_is_elementwise_mean(families, tmp_path):
    base, experts = families["gemma2"]
    got = load_all(merge(MergeJob("soup", str(base), [str(e) for e in experts], str(tmp_path / "o"))).out)
    models = [load_all(e) for e in experts]
    for name in got:
        if is_merged(name):
            torch.testing.assert_close(got[name], torch.stack([m[name] for m in models]).mean(0), rtol=0, atol=1e-6)


def test_task_arithmetic_lambda_zero_is_base_exactly(families, tmp_path):
    base, experts = families["llama"]
    out = merge(MergeJob("task_arithmetic", str(base), [str(e) for e in experts], str(tmp_path / "o"),
                         settings={"lambda": 0}))
    got, want = load_all(out.out), load_all(base)
    assert all(torch.equal(got[n], want[n]) for n in want)


def test_single_specialist_lambda_one_is_that_specialist_bf16(bf16_family, tmp_path):
    base, experts = bf16_family
    out = merge(MergeJob("task_arithmetic", str(base), [str(experts[1])], str(tmp_path / "o"),
                         settings={"lambda": 1}, include=["*"]))
    got, want = load_all(out.out), load_all(experts[1])
    assert all(torch.equal(got[n], want[n]) for n in want)


def test_output_keeps_base_dtype_or_out_dtype(bf16_family, tmp_path):
    from safetensors import safe_open

    base, experts = bf16_family
    a = merge(MergeJob("soup", str(base), [str(e) for e in experts], str(tmp_path / "a")))
    b = merge(MergeJob("soup", str(base), [str(e) for e in experts], str(tmp_path / "b"), out_dtype="float32"))
    for path, dtype in ((a.out, torch.bfloat16), (b.out, torch.float32)):
        with safe_open(next(path.glob("*.safetensors")), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {dtype}


def test_ties_global_majority_sign_breaks_exact_ties(tmp_path):
    """Entries where the trimmed task vectors cancel exactly take the global majority sign (here −1)."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    names = ["model.layers.0.mlp.down_proj.weight", "model.layers.0.self_attn.q_proj.weight"]
    base = {n: torch.round(torch.randn(16, 16, generator=gen) * 64) / 64 for n in names}
    delta = {n: torch.round(torch.randn(16, 16, generator=gen) * 8) / 128 for n in names}
    neg = {n: -(torch.round(torch.rand(16, 16, generator=gen) * 4) + 1) / 256 for n in names}
    dirs = []
    for label, model in (("base", base), ("up", {n: base[n] + delta[n] for n in names}),
                         ("down", {n: base[n] - delta[n] for n in names}), ("neg", {n: base[n] + neg[n] for n in names})):
        d = tmp_path / label
        d.mkdir()
        save_file(model, d / "model.safetensors", metadata={"format": "pt"})
        (d / "config.json").write_text('{"model_type": "llama"}')
        dirs.append(d)
    hp = {"K": 0.5, "lambda": 1.0}
    result = merge(MergeJob("ties", str(dirs[0]), [str(d) for d in dirs[1:]], str(tmp_path / "o"), settings=hp))
    assert result.manifest["majority_sign_sum"] < 0
    got = load_all(result.out)
    want = reference("ties", dirs[0], dirs[1:], hp)
    n_tied = sum(int(((delta[n].abs() > 0) & (got[n] != base[n] + delta[n])).sum()) for n in names)
    assert n_tied > 0
    for n in names:
        torch.testing.assert_close(got[n], want[n], rtol=0, atol=0)


def test_dare_keeps_expected_fraction_and_is_seeded(families, tmp_path):
    base, experts = families["llama"]
    job = dict(method="dare", base=str(base), experts=[str(experts[2])], settings={"p": 0.9, "lambda": 1.0})
    a = load_all(merge(MergeJob(**job, out=str(tmp_path / "a"))).out)
    b = load_all(merge(MergeJob(**job, out=str(tmp_path / "b"))).out)
    c = load_all(merge(MergeJob(**{**job, "settings": {"p": 0.9, "lambda": 1.0, "seed": 1}}, out=str(tmp_path / "c"))).out)
    base_t = load_all(base)
    kept = total = 0
    for n in a:
        assert torch.equal(a[n], b[n])
        if is_merged(n):
            kept += int((a[n] != base_t[n]).sum())
            total += a[n].numel()
    assert abs(kept / total - 0.1) < 0.01
    assert any(not torch.equal(a[n], c[n]) for n in a if is_merged(n))


@pytest.mark.parametrize("method", ["dare", "ties", "localize_stitch"])
def test_sharded_and_unsharded_inputs_give_identical_outputs(families, tmp_path, method):
    """Specialist 0 is stored in many small shards; resaved as one file it must merge identically."""
    from transformers import AutoModelForCausalLM

    base, experts = families["llama"]
    single = tmp_path / experts[0].name  # same label, so DARE draws the same masks
    AutoModelForCausalLM.from_pretrained(experts[0]).save_pretrained(single, max_shard_size="10GB")
    assert len(list(experts[0].glob("*.safetensors"))) > 1 and len(list(single.glob("*.safetensors"))) == 1
    a = load_all(merge(MergeJob(method, str(base), [str(e) for e in experts], str(tmp_path / "a"))).out)
    b = load_all(merge(MergeJob(method, str(base), [str(single), *map(str, experts[1:])], str(tmp_path / "b"))).out)
    assert all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize("method,hp", [("soup", {}), ("task_arithmetic", {}), ("ties", {"K": 0.3}),
                                       ("consensus", {}), ("localize_stitch", {})])
def test_merging_large_tensors_in_row_blocks_changes_nothing(families, tmp_path, monkeypatch, method, hp):
    """Element-wise methods merge big tensors a block of rows at a time (flat memory); bit-identical."""
    import mergebench.merging.io.source as source

    base, experts = families["llama"]
    job = dict(method=method, base=str(base), experts=[str(e) for e in experts], settings=hp, include=["*"])
    whole = load_all(merge(MergeJob(**job, out=str(tmp_path / "whole"))).out)
    monkeypatch.setattr(source, "BLOCK_ELEMENTS", 100)  # every matrix is split into many row blocks
    blocked = load_all(merge(MergeJob(**job, out=str(tmp_path / "blocked"))).out)
    assert all(torch.equal(whole[n], blocked[n]) for n in whole)


def test_ties_majority_sign_fix_ups_land_in_the_right_block(tmp_path, monkeypatch):
    import mergebench.merging.io.source as source

    monkeypatch.setattr(source, "BLOCK_ELEMENTS", 32)
    test_ties_global_majority_sign_breaks_exact_ties(tmp_path)


@pytest.mark.parametrize("kind", ["llama", "llama-tied", "gemma2"])
def test_compat_reference_localize_stitch_is_the_reference_codes(families, tmp_path, kind):
    """--compat reference reproduces the reference code's Localize-and-Stitch (base modified in place as
    each task is localized, overlaps counted against the last other mask only), recomputed the plain way;
    and those defects do change the result."""
    from reference_merge import reference_code_localize_stitch

    base, experts = families[kind]
    job = dict(method="localize_stitch", base=str(base), experts=[str(e) for e in experts], settings={"sparsity": 0.1})
    got = load_all(merge(MergeJob(**job, out=str(tmp_path / "compat"), compat="reference")).out)
    plain = load_all(merge(MergeJob(**job, out=str(tmp_path / "default"))).out)
    want = reference_code_localize_stitch(base, experts, 0.1)
    base_t = load_all(base)
    for name, tensor in got.items():
        if is_merged(name):
            torch.testing.assert_close(tensor, want[name], rtol=0, atol=1e-6, msg=name)
        else:
            assert torch.equal(tensor, base_t[name]), name
    assert any(not torch.equal(got[n], plain[n]) for n in got if is_merged(n))


def test_the_reference_overlap_rule_counts_only_the_last_other_mask():
    from mergebench.merging.methods.localize_stitch import reference_weights, stitch

    masks = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 1, 1]], dtype=torch.bool)
    # task 0 against task 2 only, task 1 against task 2, task 2 against task 1
    assert reference_weights(masks).tolist() == [[0.5, 1.0, 0.5, 0.0], [0.5, 1.0, 0.0, 0.0], [0.5, 0.0, 1.0, 1.0]]
    tau = torch.ones(3, 4)
    assert stitch(tau, masks).tolist() == [1.0, 1.0, 1.0, 1.0]  # the correct rule: a mean of the covering ones
    assert reference_weights(masks[:1]).tolist() == [[1.0, 1.0, 1.0, 0.0]]


def test_compat_reference_localize_stitch_refuses_what_the_reference_never_ran(families, tmp_path):
    from mergebench.errors import MergeBenchError

    base, experts = families["llama"]
    with pytest.raises(MergeBenchError, match=r"--compat reference reproduces the reference code's dataless, "
                                              r"global Localize-and-Stitch only .*scope=tensor"):
        merge(MergeJob("localize_stitch", str(base), [str(e) for e in experts], str(tmp_path / "o"),
                       settings={"scope": "tensor"}, compat="reference"))
    assert not (tmp_path / "o").exists()


def test_ties_per_tensor_zero_majority_behaves_like_minus_one():
    """A tensor whose elected signs sum to exactly zero: where an entry's trimmed sum is 0 too, the
    negative entries are the ones kept (as `where(sign > 0, τ > 0, τ < 0)` does with a zero sign)."""
    from mergebench.merging.methods.spec import TensorContext
    from mergebench.merging.methods.ties import ties

    tau = torch.tensor([[2.0, -3.0, 1.0], [-1.0, 1.0, -1.0]])  # totals 1, -2, 0: signs +1, -1, 0 sum to 0
    ctx = TensorContext("t", ["a", "b"], None, None)
    got = ties(tau, ctx, {"K": 1.0, "lambda": 1.0, "aggregation": "sum", "scope": "tensor"})
    assert got.tolist() == [2.0, -3.0, -1.0]
