"""Scaled sums streamed from the mapped checkpoints (soup, task arithmetic on the CPU) against the plain
path through the [T, n] task vectors: the same bytes, the same errors, whatever T, dtypes and piece size."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tinymodels import build_base

from mergebench.errors import MergeBenchError
from mergebench.merging.engine import Merger
from mergebench.merging.io import source
from mergebench.merging.run import MergeJob


def specialists(base: Path, root: Path, count: int, dtype: torch.dtype, edit=None) -> list[Path]:
    """`count` specialists: the base plus noise whose scale spans six decades across them, so the order
    of the sum shows in the rounding; `edit(t, tensors)` may change specialist t's tensors."""
    tensors = load_file(base / "model.safetensors")
    gen = torch.Generator().manual_seed(7)
    out = []
    for t in range(count):
        scale = 10.0 ** (-3 + 6 * t / max(count - 1, 1))
        mine = {n: (v.float() + torch.randn(v.shape, generator=gen) * scale).to(dtype) for n, v in tensors.items()}
        if edit is not None:
            edit(t, mine)
        path = root / f"spec{t}"
        path.mkdir()
        save_file(mine, path / "model.safetensors", metadata={"format": "pt"})
        shutil.copy(base / "config.json", path)
        out.append(path)
    return out


def run_both(base: Path, experts: list[Path], out: Path, method: str, out_dtype: str | None,
             monkeypatch) -> tuple[dict, dict]:
    """The merge once streamed (task vectors never formed) and once through the plain path."""
    results = {}
    for path in ("streamed", "plain"):
        job = MergeJob(method, str(base), [str(e) for e in experts], str(out / path), include=["*"],
                       out_dtype=out_dtype, device="cpu")
        merger = Merger(job)
        assert merger.sum_scale is not None
        if path == "plain":
            merger.sum_scale = None
            merger.run()
        else:
            with monkeypatch.context() as m:
                m.setattr(source.TaskVectorSource, "task_vectors", lambda *a, **k: pytest.fail("τ formed"))
                merger.run()
        results[path] = load_file(out / path / "model.safetensors")
    return results["streamed"], results["plain"]


@pytest.mark.parametrize("method,count,dtype,out_dtype", [
    ("task_arithmetic", 5, torch.float32, "bfloat16"),
    ("soup", 7, torch.bfloat16, None),
    ("task_arithmetic", 1, torch.bfloat16, "float16"),
    ("soup", 2, torch.float16, "float32"),
])
def test_the_streamed_sum_gives_the_plain_paths_bytes(tmp_path, monkeypatch, method, count, dtype, out_dtype):
    # Small blocks and odd pieces: every tensor spans several blocks, most pieces end mid-row.
    monkeypatch.setattr(source, "BLOCK_ELEMENTS", 1000)
    monkeypatch.setattr(source, "PIECE_ELEMENTS", 97)
    base = build_base("llama-tied", tmp_path / "base", dtype=dtype)
    experts = specialists(base, tmp_path, count, dtype)
    streamed, plain = run_both(base, experts, tmp_path / "out", method, out_dtype, monkeypatch)
    assert set(streamed) == set(plain)
    for name in plain:
        assert torch.equal(streamed[name].view(torch.uint8), plain[name].view(torch.uint8)), name
    base_t = load_file(base / "model.safetensors")
    assert any(not torch.equal(streamed[n].float(), base_t[n].float()) for n in base_t)


def overflowing(tmp_path: Path) -> tuple[Path, list[Path], str]:
    base = build_base("llama-tied", tmp_path / "base")
    name = "model.layers.1.mlp.up_proj.weight"
    tensors = load_file(base / "model.safetensors")
    tensors[name][2, 5] = 0.0
    save_file(tensors, base / "model.safetensors", metadata={"format": "pt"})

    def huge(t, mine):  # each τ is finite; their sum is not
        mine[name][2, 5] = 3e38

    return base, specialists(base, tmp_path, 2, torch.float32, huge), name


def test_a_sum_that_overflows_is_left_to_the_plain_path(tmp_path, monkeypatch):
    base, experts, name = overflowing(tmp_path)
    job = MergeJob("task_arithmetic", str(base), [str(e) for e in experts], str(tmp_path / "out"), device="cpu")
    merger = Merger(job)
    blocks = []
    real = source.TaskVectorSource.task_vectors
    monkeypatch.setattr(source.TaskVectorSource, "task_vectors",
                        lambda self, n, block=None: blocks.append(n) or real(self, n, block))
    merger.run()
    assert blocks == [name]  # only the tensor whose streamed sum was not finite took the plain path
    merged = load_file(tmp_path / "out" / "model.safetensors")[name]
    assert merged[2, 5] == float("inf") and int(torch.isfinite(merged).sum()) == merged.numel() - 1


@pytest.mark.parametrize("method", ["soup", "ties"])  # ties: its pieces (tests/test_streamed_ties.py)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_inputs_that_are_not_finite_are_named_as_before(tmp_path, method, bad):
    """The streamed sum checks only its results (every input reaches them): NaN and ±inf still send the
    tensor to the plain path, which names the specialist."""
    base = build_base("llama-tied", tmp_path / "base")
    name = "model.layers.0.self_attn.q_proj.weight"

    def nan(t, mine):
        if t == 1:
            mine[name][0, 3] = bad

    experts = specialists(base, tmp_path, 3, torch.float32, nan)
    with pytest.raises(MergeBenchError, match=rf"^{experts[1]}: tensor {name} contains NaN or infinite values$"):
        Merger(MergeJob(method, str(base), [str(e) for e in experts], str(tmp_path / "out"), device="cpu")).run()
    assert not (tmp_path / "out").exists()


def test_task_vectors_are_summed_in_specialist_order():
    """One order on every machine: torch's own reduction orders some entries by vector width (six rows
    of 1000 entries differ from a plain loop under both AVX2 and scalar kernels)."""
    from mergebench.merging.methods import TensorContext
    from mergebench.merging.methods.linear import soup, task_arithmetic

    tau = torch.randn(6, 1000, generator=torch.Generator().manual_seed(3)) * torch.logspace(-3, 3, 6)[:, None]
    want = tau[0].clone()
    for row in tau[1:]:
        want = want + row
    ctx = TensorContext("w", [str(t) for t in range(6)])
    assert torch.equal(task_arithmetic(tau, ctx, lam=1.0), want)
    assert torch.equal(soup(tau, ctx), want * (1 / 6))
