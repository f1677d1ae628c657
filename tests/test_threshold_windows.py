"""The sampled windows of the global thresholds (merging/thresholds.py): with them a merge reads the model
twice instead of three times, and its bytes are those of the plain two-pass thresholds whether the sample
was right or not."""

from __future__ import annotations

import pytest

import mergebench.merging.thresholds as thresholds
import mergebench.merging.topk as topk
from mergebench.merging.io.source import TaskVectorSource
from mergebench.merging.run import MergeJob, merge

CASES = [("ties", {"K": 0.3, "lambda": 0.4}), ("ties", {"K": 0.2, "aggregation": "mean", "threshold_set": "merged"}),
         ("localize_stitch", {"sparsity": 0.1})]


def _tiny_sample(monkeypatch) -> None:
    """The tiny models rank about 15,500 entries: sample every second row, and allow the wider windows a
    sample of that size gives (on a real model a window spans a few bins)."""
    monkeypatch.setattr(thresholds, "SAMPLE_ENTRIES", 6000)
    monkeypatch.setattr(topk, "MAX_WINDOW", 64)


def _run(family, out, method, hp, phases=None, **job):
    base, experts = family
    progress = (lambda phase, done, total: phases.append(phase)) if phases is not None else None
    return merge(MergeJob(method, str(base), [str(e) for e in experts], str(out), settings=hp, **job), progress)


def _bytes(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.safetensors"))}


def _plain(monkeypatch, family, out, method, hp, **job):
    with monkeypatch.context() as m:
        m.setattr(thresholds, "sample_windows", lambda *a, **k: None)
        return _run(family, out, method, hp, **job)


@pytest.mark.parametrize("kind", ["llama", "llama-tied", "gemma2"])
@pytest.mark.parametrize("method,hp", CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CASES)])
def test_sampled_windows_skip_the_second_pass_and_change_no_byte(families, tmp_path, monkeypatch, kind, method, hp):
    _tiny_sample(monkeypatch)
    phases = []
    got = _run(families[kind], tmp_path / "got", method, hp, phases)
    assert "thresholds 1/2" in phases and "thresholds 2/2" not in phases
    want = _plain(monkeypatch, families[kind], tmp_path / "want", method, hp)
    assert _bytes(got.out) == _bytes(want.out)
    assert got.manifest["global_thresholds"] == want.manifest["global_thresholds"]
    assert got.manifest["majority_sign_sum"] == want.manifest["majority_sign_sum"]


@pytest.mark.parametrize("method,hp", CASES[:2], ids=["ties-0", "ties-1"])
def test_a_right_sample_finds_the_thresholds_in_one_windowed_pass(families, tmp_path, monkeypatch, method, hp):
    """On the CPU the sampled windows are counted in one pass over pieces of the mapped files (no
    histogram passes at all), with the plain passes' thresholds and bytes."""
    _tiny_sample(monkeypatch)
    with monkeypatch.context() as m:
        m.setattr(thresholds, "streamed_thresholds", lambda *a, **k: pytest.fail("histogram passes ran"))
        got = _run(families["llama"], tmp_path / "got", method, hp)
    want = _plain(monkeypatch, families["llama"], tmp_path / "want", method, hp)
    assert got.manifest["global_thresholds"] == want.manifest["global_thresholds"]
    assert _bytes(got.out) == _bytes(want.out)


def test_a_misleading_sample_only_costs_the_second_pass(families, tmp_path, monkeypatch):
    _tiny_sample(monkeypatch)
    monkeypatch.setattr(thresholds, "Z", -40.0)  # windows far from the thresholds
    phases = []
    got = _run(families["llama"], tmp_path / "got", "ties", {"K": 0.3}, phases, include=["*"])
    assert "thresholds 2/2" in phases
    want = _plain(monkeypatch, families["llama"], tmp_path / "want", "ties", {"K": 0.3}, include=["*"])
    assert _bytes(got.out) == _bytes(want.out)


def test_the_model_is_read_twice_not_three_times(families, tmp_path, monkeypatch):
    _tiny_sample(monkeypatch)
    read = []
    plain = TaskVectorSource.task_vectors

    def counting(self, name, block=None):
        base, tau = plain(self, name, block)
        read.append(base.numel())
        return base, tau

    monkeypatch.setattr(TaskVectorSource, "task_vectors", counting)
    _run(families["llama"], tmp_path / "a", "ties", {"K": 0.3})
    sampled = sum(read)
    read.clear()
    _plain(monkeypatch, families["llama"], tmp_path / "b", "ties", {"K": 0.3})
    assert sampled < 0.8 * sum(read), (sampled, sum(read))


def test_small_models_are_not_sampled(families):
    from mergebench.merging.engine import Merger

    base, experts = families["llama"]
    m = Merger(MergeJob("ties", str(base), [str(e) for e in experts], "/nonexistent/out"))
    assert thresholds.sample_windows(m.source, m.ranked, lambda d: d // 3) is None  # below 2 × SAMPLE_ENTRIES


def test_an_input_that_is_not_finite_is_named_through_the_windowed_pass(families, tmp_path, monkeypatch):
    """The windowed pass sees a NaN only as a sum that is not finite: the histogram passes then run and
    name the specialist and tensor, and nothing is written."""
    import shutil

    from safetensors.torch import load_file, save_file

    from mergebench.errors import MergeBenchError

    _tiny_sample(monkeypatch)
    base, experts = families["llama-tied"]
    bad = tmp_path / "bad"
    shutil.copytree(experts[1], bad)
    (weights,) = bad.glob("*.safetensors")
    tensors = load_file(weights)
    name = "model.layers.0.mlp.down_proj.weight"
    tensors[name][1, 2] = float("nan")
    save_file(tensors, weights, metadata={"format": "pt"})
    clean = []  # the windows of the clean specialists: the sample itself would meet the NaN first
    sample = thresholds.sample_windows
    monkeypatch.setattr(thresholds, "sample_windows", lambda *a: clean[0] if clean else clean.append(sample(*a)))
    _run(families["llama-tied"], tmp_path / "clean", "ties", {"K": 0.3})
    assert clean[0] is not None
    histogram = []
    real = thresholds.streamed_thresholds
    monkeypatch.setattr(thresholds, "streamed_thresholds", lambda *a, **k: histogram.append(1) or real(*a, **k))
    with pytest.raises(MergeBenchError, match=rf"^{bad}: tensor {name} contains NaN or infinite values$"):
        _run((base, [experts[0], bad, experts[2]]), tmp_path / "out", "ties", {"K": 0.3})
    assert histogram and not (tmp_path / "out").exists()
