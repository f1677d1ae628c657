"""Families: the eight shipped MergeBench definitions and a researcher's own FAMILY.yaml, one mechanism
(mergebench/catalog/families.py), planned the same way and checked with one-line errors."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from reference_merge import load_all
from tinymodels import build_base, build_specialist

from mergebench.catalog import DOMAIN_NAMES, MODELS
from mergebench.catalog.families import load_family, shipped_names
from mergebench.cli.main import main
from mergebench.errors import MergeBenchError
from mergebench.pipeline.plan import Plan, build_plan
from mergebench.pipeline.runner import Runner
from mergebench.pipeline.workspace import Workspace
from mergebench.runtimes.local import LocalRuntime


@pytest.fixture(scope="module")
def local_family(tmp_path_factory) -> Path:
    """A family file over real tiny Llama checkpoints on disk, with a multi-task model."""
    root = tmp_path_factory.mktemp("byo")
    base = build_base("llama", root / "models" / "base")
    for i, domain in enumerate(DOMAIN_NAMES):
        build_specialist(base, root / "models" / domain, seed=300 + i)
    build_specialist(base, root / "models" / "mtl", seed=399)
    lines = ["name: my-llama", "base: models/base", "specialists:"]
    lines += [f"  {d}: models/{d}" for d in DOMAIN_NAMES] + ["multitask: models/mtl"]
    (root / "family.yaml").write_text("\n".join(lines) + "\n")
    return root / "family.yaml"


def test_the_eight_bases_are_shipped_family_files():
    assert set(shipped_names()) == {m for m in MODELS if m != "tiny"}
    for name in shipped_names():
        family, base = load_family(name), MODELS[name]
        assert family.name == name and family.base == base.hub_id and family.local == {}
        assert family.specialists == base.specialist_repo_ids() and family.multitask is None


def test_a_users_family_is_planned_like_a_shipped_one(local_family):
    ours, shipped = build_plan(str(local_family), ["soup"]), build_plan("llama-3.2-3b", ["soup"])
    assert ours.model == "my-llama"
    fetch = ours.by_name["fetch"]
    assert fetch.params["models"]["math"] == str((local_family.parent / "models" / "math").resolve())
    assert set(fetch.params["local"]) == {"base", *DOMAIN_NAMES, "multitask"}
    assert shipped.by_name["fetch"].params["models"]["math"] == "MergeBench/Llama-3.2-3B_math"
    extra = {s.name for s in ours.stages} - {s.name for s in shipped.stages}
    assert extra == {"eval/multitask/lmeval", "eval/multitask/bigcode-generate", "eval/multitask/bigcode",
                     "eval/multitask/safety"}
    assert len(ours.stages) == len(shipped.stages) + 4  # the same plan otherwise


def test_rewriting_a_local_model_changes_the_keys(local_family, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(local_family.parent, copy)
    before = build_plan(str(copy / "family.yaml"), ["soup"]).by_name
    (copy / "models" / "math" / "config.json").write_text((copy / "models" / "math" / "config.json").read_text()
                                                          + "\n")
    after = build_plan(str(copy / "family.yaml"), ["soup"]).by_name
    assert before["fetch"].key != after["fetch"].key and before["merge/soup"].key != after["merge/soup"].key


def test_fetch_and_merge_run_on_a_local_family(local_family, tmp_path):
    """The hub plan's own fetch and merge stages, on the local family (no hub, no GPU: the merge stage
    asks for one GPU and gets the CUDA_VISIBLE_DEVICES double 0, where torch then finds none)."""
    full = build_plan(str(local_family), ["soup"], image_id=lambda image: "local")
    # the family's fetch without the harnesses' fetch stages it waits on in a whole plan (they need the hub)
    fetch = dataclasses.replace(full.by_name["fetch"], inputs={})
    plan = Plan(full.model, [fetch, full.by_name["merge/soup"]])
    ws = Workspace(tmp_path / "ws")
    summary = Runner(plan, ws, LocalRuntime(), gpus=[0]).run()
    assert summary.status == {"fetch": "done", "merge/soup": "done"}, summary.logs
    models = json.loads((ws.output(plan.by_name["fetch"]) / "models.json").read_text())
    assert models["multitask"].endswith("models/mtl")
    merged = load_all(ws.output(plan.by_name["merge/soup"]) / "model")
    experts = [load_all(local_family.parent / "models" / d) for d in DOMAIN_NAMES]
    name = "model.layers.0.mlp.up_proj.weight"
    torch.testing.assert_close(merged[name], torch.stack([e[name] for e in experts]).mean(0), rtol=0, atol=1e-6)


def test_cli_plans_a_family_file(local_family, tmp_path):
    result = CliRunner().invoke(main, ["plan", "--model", str(local_family), "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    assert "plan for my-llama" in result.output and "eval/multitask/lmeval" in result.output


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fam.yaml"
    path.write_text(text)
    return path


def _family_text(models: Path, **change) -> str:
    entries = {"name": "x", "base": str(models / "base"),
               "specialists": {d: str(models / d) for d in DOMAIN_NAMES}}
    entries.update(change)
    return json.dumps({k: v for k, v in entries.items() if v is not None})  # JSON is YAML


@pytest.mark.parametrize("change, message", [
    ({"specialists": {d: "a/b" for d in DOMAIN_NAMES[:-1]}}, "specialists lacks 'safety'"),
    ({"specialists": {**{d: "a/b" for d in DOMAIN_NAMES}, "poetry": "a/b"}}, "unknown domain 'poetry'"),
    ({"recipe": "fast"}, "unknown key 'recipe' (known: name, base, specialists, multitask)"),
    ({"base": None}, "missing key 'base'"),
    ({"base": "./nowhere"}, "base './nowhere' is neither a directory nor a hub id"),
    ({"name": "my family"}, "name 'my family' must be a word"),
])
def test_bad_family_files_are_one_line_errors(local_family, tmp_path, change, message):
    path = _write(tmp_path, _family_text(local_family.parent / "models", **change))
    with pytest.raises(MergeBenchError, match="^" + re.escape(str(path)) + ": .*" + re.escape(message)):
        load_family(str(path))


def test_not_a_causal_lm_and_another_architecture_are_refused(local_family, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(local_family.parent / "models", models)
    config = json.loads((models / "coding" / "config.json").read_text())
    (models / "coding" / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaModel"]}))
    with pytest.raises(MergeBenchError, match=r"coding.* is not a causal LM \(architectures: LlamaModel\)"):
        load_family(str(_write(tmp_path, _family_text(models))))
    (models / "coding" / "config.json").write_text(json.dumps(config))
    (models / "math" / "config.json").write_text(json.dumps({**config, "hidden_size": 96}))
    with pytest.raises(MergeBenchError, match=r"fam\.yaml: math .* has hidden_size=96 but the base has"):
        load_family(str(_write(tmp_path, _family_text(models))))


def test_unknown_model_names_list_the_families(tmp_path):
    with pytest.raises(MergeBenchError, match=r"unknown model 'llama-9'.*llama-3\.2-3b.*FAMILY\.yaml"):
        build_plan("llama-9", ["soup"])
    with pytest.raises(MergeBenchError, match=r"nothing\.yaml: no such family file"):
        build_plan(str(tmp_path / "nothing.yaml"), ["soup"])
