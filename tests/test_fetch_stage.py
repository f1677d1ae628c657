"""The fetch stage of a MergeBench plan: models, and the validation sets when a data-dependent method is
planned, so that every later stage runs with the hub offline.

The hub is unreachable here, so `snapshot_download` is the one double: it lays the repository out in
the hub cache as the real one does (tests/hubcache.py), and what the later stages read is real.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hubcache import write_dataset

from mergebench.catalog import DOMAIN_NAMES, validation_repo
from mergebench.errors import MergeBenchError
from mergebench.merging.datapass.samples import load_samples
from mergebench.pipeline.execute import StageContext
from mergebench.pipeline.kinds import fetch
from mergebench.pipeline.plan import build_plan
from mergebench.pipeline.workspace import Workspace

VAL_ROWS = {"math": [{"query": f"What is {i} + {i}?", "response": str(2 * i)} for i in range(6)]}


def test_validation_sets_are_fetched_only_for_data_dependent_methods():
    data_free = build_plan("llama-3.2-3b", ["soup", "ties"]).by_name["fetch"]
    assert data_free.params["datasets"] == []
    for method in ("regmean", "regmean_pp", "fisher"):
        stage = build_plan("llama-3.2-3b", [method]).by_name["fetch"]
        assert stage.params["datasets"] == [f"MergeBench/{d}_val" for d in DOMAIN_NAMES]


def test_fetched_validation_set_is_read_offline(tmp_path, monkeypatch):
    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    calls = []
    import huggingface_hub

    real = huggingface_hub.snapshot_download

    def hub(repo, token=None, repo_type=None, allow_patterns=None, **offline):
        if offline.get("local_files_only"):  # the readers' cache lookups go to the real function
            return real(repo, repo_type=repo_type, **offline)
        calls.append((repo, repo_type))
        if repo_type == "dataset":
            rows = VAL_ROWS.get(repo.split("/")[1].removesuffix("_val"), VAL_ROWS["math"])
            return str(write_dataset(hf_home, repo, {"data/train-00000-of-00001.parquet": rows}))
        snap = hf_home / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc"
        snap.mkdir(parents=True, exist_ok=True)
        (snap / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
        return str(snap)

    monkeypatch.setattr("huggingface_hub.snapshot_download", hub)
    stage = build_plan("llama-3.2-3b", ["regmean"]).by_name["fetch"]
    out = tmp_path / "out"
    out.mkdir()
    result = fetch.run(StageContext(stage, Workspace(tmp_path / "ws"), {}, out))
    assert [c for c in calls if c[1] == "dataset"] == [(validation_repo(d), "dataset") for d in DOMAIN_NAMES]
    assert set(result["revisions"]) >= {validation_repo(d) for d in DOMAIN_NAMES}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    samples = load_samples("math", 3, seed=0)
    assert len(samples) == 3 and all(s.response in {str(2 * i) for i in range(6)} for s in samples)
    assert "What is" in samples[0].prompt


def test_a_dataset_the_hub_refuses_names_it(tmp_path, monkeypatch):
    def hub(repo, token=None, repo_type=None, allow_patterns=None):
        if repo_type == "dataset":
            raise OSError("401 Client Error")
        return str(tmp_path)

    monkeypatch.setattr("huggingface_hub.snapshot_download", hub)
    stage = build_plan("llama-3.2-3b", ["fisher"]).by_name["fetch"]
    with pytest.raises(MergeBenchError, match=r"fetch MergeBench/instruction_val: OSError \(gated: set HF_TOKEN"):
        fetch.run(StageContext(stage, Workspace(tmp_path / "ws"), {}, Path(tmp_path)))
