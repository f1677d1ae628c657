"""Global-threshold TIES merged piece by piece from the mapped checkpoints (CPU) against the plain path
through the [T, n] task vectors: the same bytes, signed zeros, exact sign ties and the majority-sign
fix-ups included, whatever T, dtypes, aggregation and piece size; a task vector that overflows is named as
before (inputs that are not finite: tests/test_streamed_sum.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_streamed_sum import specialists
from tinymodels import build_base

from mergebench.errors import MergeBenchError
from mergebench.merging.engine import Merger
from mergebench.merging.io import source
from mergebench.merging.run import MergeJob

TIED = "model.layers.1.mlp.up_proj.weight"
BIG = 1e4  # above every specialist's threshold


def with_ties(base: Path, root: Path, count: int, dtype: torch.dtype, bias: float) -> list[Path]:
    """Specialists whose noise leans to `bias` (so the majority sign is known), and one row of TIED where
    the base is ±0 and the specialists make exact ties: τ_0 = +BIG, τ_1 = −BIG (total 0, a value that
    depends on the majority sign), entries where every τ is ±0, and τ = −0 (a −0 specialist on a +0 base)."""
    tensors = load_file(base / "model.safetensors")
    row = torch.tensor([-0.0, 0.0] * 8)
    tensors[TIED][0, :16] = row
    save_file(tensors, base / "model.safetensors", metadata={"format": "pt"})

    def edit(t, mine):
        for name, v in mine.items():
            mine[name] = (v.float() + bias * (v.float() - tensors[name].float()).abs()).to(dtype)
        w = mine[TIED]
        w[0, :16] = row  # τ = ±0 wherever no tie is set below
        w[0, 8:16] = -0.0  # on the +0 entries of the base: τ = −0
        if t < 2:
            w[0, :4] = BIG if t == 0 else -BIG

    return specialists(base, root, count, dtype, edit)


def run_both(base: Path, experts: list[Path], out: Path, settings: dict, out_dtype: str | None) -> tuple[dict, dict]:
    results = {}
    for path in ("pieces", "plain"):
        job = MergeJob("ties", str(base), [str(e) for e in experts], str(out / path), settings=settings,
                       include=["*"], out_dtype=out_dtype, device="cpu")
        merger = Merger(job)
        assert merger.sign_pieces is not None
        if path == "plain":
            merger.sign_pieces = None
        else:  # the merge itself must not form the task vectors
            merger.spec = dataclasses.replace(merger.spec, with_sign=lambda *a: pytest.fail("plain path taken"))
        merger.run()
        results[path] = load_file(out / path / "model.safetensors")
    return results["pieces"], results["plain"]


@pytest.mark.parametrize("count,dtype,out_dtype,aggregation,bias", [
    (5, torch.float32, "bfloat16", "sum", -1.0),
    (5, torch.bfloat16, None, "sum", 1.0),
    (2, torch.float32, None, "mean", -1.0),
    (7, torch.float16, "float32", "mean", 1.0),
    (1, torch.bfloat16, "float32", "sum", -1.0),
])
def test_pieces_give_the_plain_paths_bytes(tmp_path, monkeypatch, count, dtype, out_dtype, aggregation, bias):
    # Small blocks and odd pieces: every tensor spans several blocks, most pieces end mid-row.
    monkeypatch.setattr(source, "BLOCK_ELEMENTS", 1000)
    monkeypatch.setattr(source, "PIECE_ELEMENTS", 97)
    base = build_base("llama-tied", tmp_path / "base", dtype=dtype)
    experts = with_ties(base, tmp_path, count, dtype, bias)
    settings = {"K": 0.3, "lambda": 0.4, "aggregation": aggregation}
    pieces, plain = run_both(base, experts, tmp_path / "out", settings, out_dtype)
    assert set(pieces) == set(plain)
    for name in plain:
        assert torch.equal(pieces[name].view(torch.uint8), plain[name].view(torch.uint8)), name
    tied = pieces[TIED][0, :16].float()
    if count >= 2:  # the tie resolves to the majority sign's side: ±0.4·BIG (a mean of one term)
        want = torch.tensor(0.4 * BIG * bias).to(dtype).float()
        assert torch.equal(tied[:4], torch.full((4,), float(want)))
    assert torch.equal(tied[4:].view(torch.int32), torch.zeros(12).view(torch.int32))  # +0 everywhere else


def test_a_task_vector_that_overflows_is_named_as_before(tmp_path):
    base = build_base("llama-tied", tmp_path / "base")
    name = "model.layers.1.mlp.up_proj.weight"
    tensors = load_file(base / "model.safetensors")
    tensors[name][2, 5] = -3e38
    save_file(tensors, base / "model.safetensors", metadata={"format": "pt"})

    def far(t, mine):
        mine[name][2, 5] = 3e38

    experts = specialists(base, tmp_path, 2, torch.float32, far)
    with pytest.raises(MergeBenchError, match=rf"^tensor {name}: a task vector overflows fp32"):
        Merger(MergeJob("ties", str(base), [str(e) for e in experts], str(tmp_path / "out"), device="cpu")).run()
