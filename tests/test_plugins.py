"""A merging method from the researcher's own package: installed (a real dist-info with an entry point
in the group `mergebench.methods`, on PYTHONPATH) or named as `module:ATTRIBUTE`, it is listed, merges
through the streaming engine (a global threshold included) and runs in `reproduce` with the tiny
evaluation and report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
from reference_merge import flatten, load_all, unflatten
from tinypipeline import EXE

from mergebench.errors import MergeBenchError
from mergebench.merging.methods import all_methods, get_method
from mergebench.merging.run import MergeJob, merge
from mergebench.pipeline.plan import build_plan

PLUGIN = textwrap.dedent('''
    """Two methods of a researcher's own: an element-wise median, and a global top-k sum."""
    import torch

    from mergebench.merging.methods import MethodSpec, Param
    from mergebench.merging.methods.spec import threshold_mask

    LAMBDA = Param("lambda", float, 1.0, "scale of the merged task vector", low=0.0)

    MEDIAN = MethodSpec("median", "Element-wise median of the task vectors",
                        lambda tau, ctx, hp: tau.median(0).values * hp["lambda"], (LAMBDA,),
                        reference="a test plug-in", elementwise=True)

    def _topk(tau, ctx, hp):
        return (tau * threshold_mask(tau, ctx.thresholds)).sum(0) * hp["lambda"]

    TOPK_SUM = MethodSpec("topk_sum", "Sum of each task vector's globally largest entries", _topk,
                          (LAMBDA, Param("keep", float, 0.2, "fraction kept", low=0.0, high=1.0)),
                          global_rank=lambda hp, d: max(1, int(d * hp["keep"])), reference="a test plug-in")
    NOT_A_METHOD = 42
''')


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """`my_merges` installed the way pip lays out a wheel: the package and its dist-info."""
    root = tmp_path_factory.mktemp("site")
    (root / "my_merges").mkdir()
    (root / "my_merges" / "__init__.py").write_text(PLUGIN)
    info = root / "my_merges-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-merges\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mergebench.methods]\nmedian = my_merges:MEDIAN\n")
    return root


@pytest.fixture
def installed(site, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    return site


def test_an_installed_plugin_is_listed_and_found_by_name(installed):
    methods = all_methods()
    assert "median" in methods and "ties" in methods and get_method("median") is methods["median"]
    listing = subprocess.run([EXE, "methods"], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(installed)})
    assert listing.returncode == 0 and "median (plug-in)" in listing.stdout and "Element-wise median" in listing.stdout


def test_plugins_merge_through_the_engine(installed, families, tmp_path):
    base, experts = families["llama"]
    out = tmp_path / "median"
    merge(MergeJob("median", str(base), [str(e) for e in experts], str(out), settings={"lambda": 0.5}))
    b, es, merged = load_all(base), [load_all(e) for e in experts], load_all(out)
    name = "model.layers.0.self_attn.q_proj.weight"
    expected = b[name] + 0.5 * torch.stack([e[name] - b[name] for e in es]).median(0).values
    torch.testing.assert_close(merged[name], expected, rtol=0, atol=1e-6)
    assert torch.equal(merged["model.embed_tokens.weight"], b["model.embed_tokens.weight"])  # kept, as for all


def test_a_plugin_with_a_global_threshold_matches_a_plain_reference(installed, families, tmp_path):
    """The engine runs its exact global top-k for a plug-in that declares `global_rank`."""
    base, experts = families["llama"]
    out = tmp_path / "topk"
    merge(MergeJob("my_merges:TOPK_SUM", str(base), [str(e) for e in experts], str(out),
                   settings={"keep": 0.25, "lambda": 0.7}))
    b, es = load_all(base), [load_all(e) for e in experts]
    ranked = sorted(n for n in b if "embed" not in n)
    flat = flatten(es, ranked) - flatten([b], ranked)
    k = max(1, int(flat.shape[1] * 0.25))
    kth = flat.abs().kthvalue(flat.shape[1] - k + 1, dim=1, keepdim=True).values
    delta = unflatten(0.7 * (flat * (flat.abs() >= kth)).sum(0), b, ranked)
    merged = load_all(out)
    for name in (n for n in ranked if not n.startswith("lm_head")):
        torch.testing.assert_close(merged[name], b[name] + delta[name], rtol=0, atol=1e-6)


def test_reproduce_runs_a_plugin_with_the_whole_evaluation(site, tiny_run, tmp_path):
    ws, results = tmp_path / "ws", tmp_path / "results"
    shutil.copytree(tiny_run[0], ws, ignore=shutil.ignore_patterns(".lock", "*.lock"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run([EXE, "reproduce", "--methods", "median", "--eval-limit", "8", "--workspace", str(ws),
                          "--results", str(results)], capture_output=True, text=True, timeout=1200, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {r["model"]: r for r in json.loads((results / "tiny" / "report.json").read_text())["rows"]}
    assert rows["merge:median"]["role"] == "merge" and rows["merge:median"]["np"] is not None
    assert "merge:soup" not in rows  # only the plug-in was asked for
    assert "running merge/median" in run.stderr and "running fetch/tiny" not in run.stderr


@pytest.mark.parametrize("ref, message", [
    ("no_such_pkg.mod:X", "cannot import no_such_pkg.mod"),
    ("my_merges:MISSING", "my_merges has no attribute 'MISSING'"),
    ("my_merges:NOT_A_METHOD", "is a int, not a mergebench MethodSpec"),
    (":X", "a plug-in reference is module.path:ATTRIBUTE"),
])
def test_bad_references_are_one_line_errors(installed, ref, message):
    with pytest.raises(MergeBenchError, match=f"^method {ref!r}: .*" + message.replace("(", r"\(")):
        get_method(ref)


def test_an_entry_point_may_not_shadow_a_builtin(site, tmp_path, monkeypatch):
    shadow = tmp_path / "shadow"
    shutil.copytree(site, shadow)
    (shadow / "my_merges-0.1.dist-info" / "entry_points.txt").write_text("[mergebench.methods]\nties = my_merges:MEDIAN\n")
    monkeypatch.syspath_prepend(str(shadow))
    with pytest.raises(MergeBenchError, match=r"plug-in 'ties' .*my-merges\): shadows the built-in method 'ties'"):
        all_methods()


def test_a_plugin_named_like_a_builtin_is_refused_by_the_plan(installed, tmp_path):
    (installed / "clash.py").write_text("from my_merges import MEDIAN\nimport dataclasses\n"
                                        "SOUP = dataclasses.replace(MEDIAN, name='soup')\n")
    with pytest.raises(MergeBenchError, match=r"method 'clash:SOUP': the plug-in is named 'soup'"):
        build_plan("tiny", ["clash:SOUP"])


def test_a_plugin_asking_for_statistics_the_kit_cannot_make_is_refused(families, tmp_path, monkeypatch):
    (tmp_path / "odd_stats.py").write_text(textwrap.dedent('''
        from mergebench.merging.methods import MethodSpec
        ODD = MethodSpec("odd", "reads statistics nobody makes", lambda tau, ctx, hp: tau.sum(0), stats_kind="hessian")
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    base, experts = families["llama"]
    with pytest.raises(MergeBenchError, match=r"^method odd reads statistics of kind 'hessian'; the kit makes "
                                              r"gram, fisher, mask$"):
        merge(MergeJob("odd_stats:ODD", str(base), [str(e) for e in experts], str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_a_statistics_kind_is_the_kits_object_whether_declared_by_object_or_name():
    """Needs carries the StatsKind itself (file, dtype, shape rule), so nothing downstream branches on a
    string; a plug-in may still write the kind's name."""
    from mergebench.merging.io.stats_store import FISHER, GRAM, MASK
    from mergebench.merging.methods import METHODS, MethodSpec

    by_name = MethodSpec("by_name", "names its kind", lambda tau, ctx, hp: tau.sum(0), stats_kind="gram")
    assert by_name.needs({}).stats is GRAM
    assert METHODS["regmean"].needs(METHODS["regmean"].settings({})).stats is GRAM
    assert METHODS["fisher"].needs(METHODS["fisher"].settings({})).stats is FISHER
    ls = METHODS["localize_stitch"]
    assert ls.needs(ls.settings({"masks": "trained"})).stats is MASK
    assert ls.needs(ls.settings({})).stats is None
