"""Every hashed lock matches its input file (sha256 in the lock header), pins exactly, carries hashes,
and holds the versions docs/containers.md and the SPEC's "known to work together" sets promise."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
IMAGES = yaml.safe_load((ROOT / "docker" / "images.yaml").read_text())


def load_lock_module():
    spec = importlib.util.spec_from_file_location("mergebench_lock_script", ROOT / "scripts" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


lock = load_lock_module()
PAIRS = lock.find_pairs()


def test_every_image_track_has_an_input_and_nothing_else_does():
    declared = {(name, track) for name, spec in IMAGES["images"].items() if name != "sandbox"
                for track in spec["tracks"]}
    assert {(p.image, p.track) for p in PAIRS} == declared
    assert IMAGES["images"]["sandbox"]["tracks"] == ["cpu"]  # standard library only: nothing to lock


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p.image}-{p.track}")
def test_lock_matches_its_input(pair):
    assert lock.check_lock(pair) == []


def test_check_catches_a_stale_lock(tmp_path, monkeypatch):
    pair = next(p for p in PAIRS if (p.image, p.track) == ("train", "cpu"))
    docker = tmp_path / "docker"
    (docker / "train").mkdir(parents=True)
    (docker / "train" / "requirements.cpu.in").write_text(pair.source.read_text() + "# an edit\n")
    (docker / "train" / "requirements.cpu.lock").write_text(pair.lock.read_text())
    monkeypatch.setattr(lock, "ROOT", tmp_path)
    monkeypatch.setattr(lock, "DOCKER", docker)
    (copy,) = lock.find_pairs("train", "cpu")
    assert any("stale" in p for p in lock.check_lock(copy))
    (docker / "train" / "requirements.cpu.lock").write_text(
        pair.lock.read_text().replace("trl==0.25.1 \\\n", "trl>=0.25 \\\n")
    )
    (docker / "train" / "requirements.cpu.in").write_text(pair.source.read_text())
    assert any("not an exact pin" in p for p in lock.check_lock(copy))


def test_check_command_passes():
    assert lock.main(["--check"]) == 0


EXPECTED = {
    # SPEC, "Versions that are known to work together": the modern track
    ("train", "modern"): {"torch": "2.8.0", "transformers": "4.57.", "accelerate": "1.11.", "trl": "0.25.1",
                          "deepspeed": "0.18."},
    ("lmeval", "modern"): {"torch": "2.8.0", "vllm": "0.11.0", "lm-eval": "0.4.11", "transformers": "4.57."},
    ("bigcode", "modern"): {"torch": "2.8.0", "transformers": "4.57."},
    ("safety", "modern"): {"torch": "2.8.0", "vllm": "0.11.0", "transformers": "4.57."},
    # the faithful track
    ("lmeval", "faithful"): {"torch": "2.1.2", "lm-eval": "0.4.9.1"},
    ("bigcode", "faithful"): {"torch": "2.1.2", "numpy": "1.24.1"},
    ("safety", "faithful"): {"torch": "2.4.0", "vllm": "0.6.3.post1", "transformers": "4.46.3"},
    # CI: the CPU wheel on disk
    ("train", "cpu"): {"torch": "2.13.0+cpu", "transformers": "4.57.", "trl": "0.25.1", "deepspeed": "0.18."},
    ("lmeval", "cpu"): {"torch": "2.13.0+cpu", "lm-eval": "0.4.11"},
}


@pytest.mark.parametrize("key", sorted(EXPECTED), ids=lambda k: f"{k[0]}-{k[1]}")
def test_locked_versions(key):
    versions = lock.locked_versions(lock.LockPair(*key).lock)
    for name, want in EXPECTED[key].items():
        got = versions.get(name)
        assert got is not None, f"{name} missing from {key}"
        assert got.startswith(want) if want.endswith(".") else got == want, (name, got, want)
    if key[1] == "cpu":
        assert "vllm" not in versions and not any(n.startswith("nvidia-") for n in versions)


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p.image}-{p.track}")
def test_no_lock_pairs_datasets_2_with_a_pyarrow_it_cannot_import(pair):
    """datasets 2.x subclasses pyarrow.PyExtensionType, which newer pyarrow no longer has: such an image
    fails on its first `import datasets` (the bigcode locks did, until the rehearsal built one)."""
    import re

    text = pair.lock.read_text()
    versions = dict(re.findall(r"^(datasets|pyarrow)==(\S+)", text, re.M))
    if versions.get("datasets", "").startswith("2."):
        assert int(versions["pyarrow"].split(".")[0]) < 15, versions
