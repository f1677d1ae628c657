"""The engine as a user meets it: outputs that load and generate, layout, manifest, resume, and bad input."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from reference_merge import load_all
from safetensors.torch import load_file, save_file

from mergebench.cli.main import main
from mergebench.errors import MergeBenchError
from mergebench.merging.run import MergeJob, merge


def job(family, out, method="ties", **kw):
    base, experts = family
    return MergeJob(method, str(base), [str(e) for e in experts], str(out), **kw)


@pytest.mark.parametrize("kind", ["llama", "llama-tied", "gemma2"])
def test_output_loads_and_generates(families, tmp_path, kind):
    from transformers import AutoModelForCausalLM

    out = merge(job(families[kind], tmp_path / "m")).out
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False)
    assert ids.shape == (1, 7)
    assert model.config.tie_word_embeddings == (kind != "llama")


def test_layout_shards_index_side_files_and_permissions(families, tmp_path):
    base, _ = families["llama"]
    (base / "tokenizer.json").write_text("{}")
    try:
        out = merge(job(families["llama"], tmp_path / "m", max_shard_size="20KB")).out
    finally:
        (base / "tokenizer.json").unlink()
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 2 and shards[0].name == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in load_all(out).values())
    for name in ("config.json", "generation_config.json", "tokenizer.json", "merge_manifest.json"):
        assert (out / name).is_file(), name
    for p in out.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    assert not list(tmp_path.glob(".m.partial-*"))


def test_manifest_records_inputs_method_and_settings(families, tmp_path):
    out = merge(job(families["gemma2"], tmp_path / "m", method="dare", settings={"seed": 7})).out
    manifest = json.loads((out / "merge_manifest.json").read_text())
    assert manifest["method"] == "dare" and manifest["settings"] == {"p": 0.9, "lambda": 0.4, "seed": 7}
    assert manifest["kit_version"] and len(manifest["experts"]) == 3
    fp = manifest["experts"][1]["files"]["model.safetensors"]
    assert fp.startswith("sha256-sampled:") and len(fp.split(":")[1]) == 64


def test_hub_id_resolves_through_local_cache(families, tmp_path, monkeypatch):
    """A hub id is looked up in the HF cache only; nothing is downloaded."""
    base, experts = families["llama-tied"]
    cache = tmp_path / "hub"
    snap = cache / "models--org--base" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    for f in base.iterdir():
        (snap / f.name).symlink_to(f)
    (cache / "models--org--base" / "refs").mkdir()
    (cache / "models--org--base" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    out = merge(MergeJob("soup", "org/base", [str(e) for e in experts], str(tmp_path / "m"))).out
    assert load_all(out)
    with pytest.raises(MergeBenchError, match="not in the Hugging Face cache"):
        merge(MergeJob("soup", "org/absent", [str(e) for e in experts], str(tmp_path / "n")))


def test_extra_vocabulary_rows_in_a_specialist(families, tmp_path):
    from tinymodels import build_specialist

    base, experts = families["llama-tied"]
    wide = build_specialist(base, tmp_path / "wide", seed=9, extra_rows=8)
    assert load_all(wide)["model.embed_tokens.weight"].shape[0] == 96 + 8
    out = merge(MergeJob("ties", str(base), [str(wide), str(experts[0])], str(tmp_path / "m"))).out
    assert torch.equal(load_all(out)["model.embed_tokens.weight"], load_all(base)["model.embed_tokens.weight"])
    out2 = merge(MergeJob("soup", str(base), [str(wide), str(experts[0])], str(tmp_path / "m2"), include=["*"])).out
    emb = load_all(out2)["model.embed_tokens.weight"]
    assert emb.shape[0] == 96
    want = (load_all(wide)["model.embed_tokens.weight"][:96] + load_all(experts[0])["model.embed_tokens.weight"]) / 2
    torch.testing.assert_close(emb, want, rtol=0, atol=1e-6)


# --- bad input: one-line errors, nothing left behind ------------------------------------------------

def _copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _expect_error(family, tmp_path, pattern, **kw):
    out = tmp_path / "out"
    with pytest.raises(MergeBenchError, match=pattern) as err:
        merge(job(family, out, **kw))
    assert "\n" not in str(err.value)
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))
    return str(err.value)


def test_architecture_mismatch(families, tmp_path):
    base, experts = families["llama"]
    other = families["gemma2"][1][0]
    msg = _expect_error((base, [experts[0], other]), tmp_path, "architecture differs")
    assert str(other) in msg and "model_type" in msg


def test_shape_mismatch_and_missing_tensor(families, tmp_path):
    base, experts = families["llama-tied"]
    bad = _copy_model(experts[1], tmp_path / "bad")
    tensors = load_file(bad / "model.safetensors")
    name = "model.layers.1.mlp.up_proj.weight"
    tensors[name] = tensors[name][:-1]
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    msg = _expect_error((base, [experts[0], bad]), tmp_path, "has shape")
    assert name in msg and str(bad) in msg
    del tensors[name]
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    _expect_error((base, [experts[0], bad]), tmp_path, f"tensor {name} is missing")


def test_corrupt_and_truncated_files(families, tmp_path):
    base, experts = families["llama-tied"]
    bad = _copy_model(experts[1], tmp_path / "bad")
    f = bad / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 100])
    msg = _expect_error((base, [bad]), tmp_path, "truncated")
    assert str(f) in msg
    f.write_bytes(data[:8] + b"#" * 40 + data[48:])
    _expect_error((base, [bad]), tmp_path, "corrupt safetensors header")


def test_non_finite_values(families, tmp_path):
    base, experts = families["gemma2"]
    bad = _copy_model(experts[2], tmp_path / "bad")
    tensors = load_file(bad / "model.safetensors")
    name = "model.layers.0.self_attn.o_proj.weight"
    tensors[name][3, 4] = float("nan")
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    msg = _expect_error((base, [experts[0], bad]), tmp_path, "NaN or infinite", method="task_arithmetic")
    assert name in msg and str(bad) in msg


@pytest.mark.parametrize("kw,pattern", [
    ({"method": "nope"}, "unknown method 'nope'"),
    ({"settings": {"density": 0.3}}, "unknown setting 'density'"),
    ({"settings": {"K": "lots"}}, "K='lots' is not a valid float"),
    ({"settings": {"K": 1.5}}, r"K=1.5 is outside \[0.0, 1.0\]"),
    ({"settings": {"aggregation": "max"}}, "must be one of sum, mean"),
    ({"out_dtype": "int4"}, "--out-dtype 'int4'"),
])
def test_bad_settings(families, tmp_path, kw, pattern):
    _expect_error(families["llama"], tmp_path, pattern, **kw)


def test_existing_output_needs_force(families, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(MergeBenchError, match="already exists"):
        merge(job(families["llama"], out))
    assert (out / "keep.txt").read_text() == "mine"
    merge(job(families["llama"], out, force=True))
    assert not (out / "keep.txt").exists() and (out / "merge_manifest.json").exists()


def test_interrupted_merge_leaves_nothing_complete(families, tmp_path):
    def interrupt(phase, done, total):
        if phase == "merge" and done == 5:
            raise KeyboardInterrupt

    from mergebench.merging.engine import Merger

    with pytest.raises(KeyboardInterrupt):
        Merger(job(families["llama"], tmp_path / "out"), interrupt).run()
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_killed_merge_is_cleaned_up_and_rerun_succeeds(families, tmp_path):
    base, experts = families["llama"]
    script = f"""
import os, signal
from mergebench.merging.engine import MergeJob, Merger
def die(phase, done, total):
    if phase == "merge" and done == 5:
        os.kill(os.getpid(), signal.SIGKILL)
Merger(MergeJob("ties", {str(base)!r}, {[str(e) for e in experts]!r}, {str(tmp_path / "out")!r}), die).run()
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "out").exists()
    assert len(list(tmp_path.glob(".out.partial-*"))) == 1  # the corpse, under a name that is not the output
    merge(job(families["llama"], tmp_path / "out"))
    assert (tmp_path / "out" / "merge_manifest.json").exists()
    assert not list(tmp_path.glob(".out.partial-*"))


# --- CLI -------------------------------------------------------------------------------------------

def test_cli_merge_with_options_and_with_config(families, tmp_path):
    base, experts = families["llama-tied"]
    runner = CliRunner()
    args = ["merge", "--method", "ties", "--base", str(base), "--out", str(tmp_path / "a"),
            "--set", "K=0.3", "--set", "lambda=0.4"]
    for e in experts:
        args += ["--expert", str(e)]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "tensors merged / copied" in r.output and "peak RSS" in r.output
    config = tmp_path / "merge.yaml"
    config.write_text(json.dumps({"method": "ties", "base": str(base), "experts": [str(e) for e in experts],
                                  "out": str(tmp_path / "b"), "settings": {"K": 0.3, "lambda": 0.4}}))
    r = runner.invoke(main, ["merge", str(config)])
    assert r.exit_code == 0, r.output
    a, b = load_all(tmp_path / "a"), load_all(tmp_path / "b")
    assert all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize("args,message", [
    (["merge", "--method", "ties"], "error: missing base: give --base"),
    (["merge", "--method", "soup", "--base", "/nowhere", "--expert", "/x", "--out", "/tmp/x"],
     "error: /nowhere: model directory does not exist"),
    (["merge", "--method", "soup", "--base", "B", "--set", "lambda"], "error: --set 'lambda': expected NAME=VALUE"),
])
def test_cli_errors_are_one_line_with_nonzero_exit(args, message):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1
    assert r.output.strip() == message or r.output.strip().startswith(message)


def test_cli_config_errors(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("method: [unclosed")
    r = CliRunner().invoke(main, ["merge", str(bad)])
    assert r.exit_code == 1 and f"{bad}: invalid YAML" in r.output
    bad.write_text("method: ties\nwhatever: 1\n")
    r = CliRunner().invoke(main, ["merge", str(bad)])
    assert r.exit_code == 1 and "unknown key 'whatever'" in r.output


def test_cli_methods_lists_every_method_with_defaults():
    r = CliRunner().invoke(main, ["methods"])
    assert r.exit_code == 0
    for name in ("soup", "task_arithmetic", "ties", "dare", "consensus", "localize_stitch", "varm"):
        assert name in r.output
    assert "K = 0.3" in r.output and "p = 0.9" in r.output


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "mergebench"
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, env={**os.environ})
    assert r.returncode == 0 and "mergebench" in r.stdout


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 48 KiB filesystem (tmpfs), so a merge runs out of space part-way through its shards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_is_one_line_and_leaves_nothing(families, tiny_disk):
    base, experts = families["llama"]
    args = ["merge", "--method", "soup", "--base", str(base), "--out", str(tiny_disk / "out")]
    for e in experts:
        args += ["--expert", str(e)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1
    assert f"error: {tiny_disk / 'out'}: cannot write the merged model: No space left on device" in r.output
    assert "Traceback" not in r.output
    assert list(tiny_disk.iterdir()) == []  # neither the output nor its .partial directory


def test_patches_land_on_their_elements_in_every_shard_and_dtype(tmp_path):
    """Fix-ups scatter into the written bytes (a writable map of each tensor): only the named elements
    change, in whichever shard and dtype the tensor has, and the bytes around them stay as written."""
    from safetensors.torch import load_file

    from mergebench.merging.io.writer import ShardedWriter

    gen = torch.Generator().manual_seed(0)
    tensors = {"a": torch.randn(300, 7, generator=gen).to(torch.bfloat16), "b": torch.randn(5000, generator=gen),
               "c": torch.randn(64, 64, generator=gen).to(torch.float16)}
    writer = ShardedWriter(tmp_path / "out", [(n, t.dtype, t.shape) for n, t in tensors.items()], 12_000)
    writer.open()
    for name, t in tensors.items():
        writer.write(name, t)
    want = {n: t.clone() for n, t in tensors.items()}
    for name, idx in (("a", [0, 17, 2099]), ("b", [4999, 3, 1000]), ("c", [4095, 64])):
        index = torch.tensor(idx)
        values = torch.arange(1, len(idx) + 1, dtype=torch.float32) * 0.5
        writer.patch(name, index, values)
        want[name].view(-1)[index] = values.to(want[name].dtype)
    writer.patch("b", torch.empty(0, dtype=torch.int64), torch.empty(0))  # nothing to do
    writer.finish(tmp_path, {})
    assert len(list((tmp_path / "out").glob("*.safetensors"))) == 3
    got = {}
    for f in (tmp_path / "out").glob("*.safetensors"):
        got.update(load_file(f))
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name]), name
