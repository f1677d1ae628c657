"""The fetch contract of a hub plan: each harness's data is fetched by a stage of its own, in its image and
before the family's fetch that every other stage reads; `mergebench plan` says what each brings; a slice
of the protocol (EvalScope) is checked before anything runs."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mergebench.cli.main import main
from mergebench.errors import MergeBenchError
from mergebench.evaluation.adapters import bigcode, lmeval, safety
from mergebench.pipeline.plan import EvalScope, build_plan
from mergebench.pipeline.stage import HUB_KINDS


def test_plan_lists_every_evaluation_dataset_and_the_judge(tmp_path):
    result = CliRunner().invoke(main, ["plan", "--model", "llama-3.2-3b", "--workspace", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = {line.split(" ", 1)[0]: line for line in result.output.splitlines() if " brings: " in line}
    assert set(lines) == {"fetch/lmeval", "fetch/bigcode", "fetch/safety", "fetch"}
    for repo, config in lmeval.TASK_DATASETS.values():
        assert (f"{repo}:{config}" if config else repo) in lines["fetch/lmeval"]
    assert "nltk punkt_tab" in lines["fetch/lmeval"] and "(lmeval image)" in lines["fetch/lmeval"]
    assert all(repo in lines["fetch/bigcode"] for repo in bigcode.TASK_DATASETS.values())
    assert f"judge {safety.JUDGE}" in lines["fetch/safety"] and "allenai/wildguardmix:wildguardtest" in lines["fetch/safety"]
    assert "base meta-llama/Llama-3.2-3B" in lines["fetch"]


def test_only_fetch_stages_reach_the_hub_and_every_other_stage_comes_after_them():
    plan = build_plan("llama-3.2-3b", ["ties"])
    order = [s.name for s in plan.stages]
    fetches = [s for s in plan.stages if s.kind in HUB_KINDS]
    assert [s.name for s in fetches] == ["fetch/lmeval", "fetch/bigcode", "fetch/safety", "fetch"]
    assert [s.image for s in fetches] == ["lmeval", "bigcode", "safety", "train"]
    assert set(plan.by_name["fetch"].inputs.values()) == {"fetch/lmeval", "fetch/bigcode", "fetch/safety"}
    # everything else reads the family's fetch, directly or through what it reads
    later = [s for s in plan.stages if s.kind not in HUB_KINDS]
    assert {s.name for s in later} <= plan.downstream("fetch")
    assert order.index("fetch") < min(order.index(s.name) for s in later)


def test_eval_limit_and_a_slice_reach_the_evaluation_stages():
    scope = EvalScope(("lmeval", "bigcode"), ("gsm8k_cot", "arc_fr", "mbppplus"), ("base", "merge:ties"), device="cpu")
    plan = build_plan("llama-3.2-3b", ["ties"], eval_limit=3, scope=scope)
    evals = [s for s in plan.stages if s.kind == "eval"]
    assert sorted(s.name for s in evals) == sorted(f"eval/{m}/{h}" for m in ("base", "merge:ties")
                                                   for h in ("lmeval", "bigcode-generate", "bigcode"))
    assert all(s.params["limit"] == 3 and s.params["device"] == "cpu" and s.gpus == 0 for s in evals)
    assert plan.by_name["eval/base/lmeval"].params["tasks"] == ["gsm8k_cot", "arc_fr"]
    assert plan.by_name["fetch/lmeval"].params["datasets"] == ["alexandrainst/m_arc:fr", "openai/gsm8k:main"]
    assert plan.by_name["fetch/bigcode"].params["tasks"] == ["mbppplus"]
    assert all(s.gpus == 0 for s in plan.stages)
    argv = lmeval.runs("/m", "/out", lmeval.LmEvalSettings(limit=3, device="cpu"), tasks=("gsm8k_cot", "arc_fr"))
    assert [r.name for r in argv] == ["lmeval-math", "lmeval-multilingual"]
    assert argv[1].argv[argv[1].argv.index("--tasks") + 1] == "arc_fr" and "--num_fewshot" in argv[1].argv
    assert argv[0].argv[-4:] == ("--limit", "3", "--device", "cpu")


@pytest.mark.parametrize(("scope", "message"), [
    (dict(harnesses=("lmeval", "safety"), device="cpu"), r"safety-eval generates with vLLM and needs a GPU"),
    (dict(harnesses=("lmeval",), tasks=("humanevalplus",)), r"task 'humanevalplus' is not one of the chosen harnesses' \(lmeval\)"),
    (dict(harnesses=("lm-eval",)), r"harness 'lm-eval': expected some of lmeval, bigcode, safety"),
    (dict(models=("merge:dare",)), r"evaluate model 'merge:dare': this plan has base, instruction"),
])
def test_a_bad_slice_is_one_line(scope, message):
    with pytest.raises(MergeBenchError, match=message):
        build_plan("llama-3.2-3b", ["ties"], scope=EvalScope(**scope))


def test_the_cli_slice_options_build_the_same_plan(tmp_path):
    result = CliRunner().invoke(main, ["plan", "--model", "llama-3.2-3b", "--methods", "ties", "--json",
                                       "--harnesses", "lmeval", "--tasks", "ifeval", "--eval-models", "base",
                                       "--device", "cpu", "--eval-limit", "2", "--workspace", str(tmp_path)])
    assert result.exit_code == 0, result.output
    import json

    stages = {s["name"]: s for s in json.loads(result.output)}
    assert stages["eval/base/lmeval"]["params"] == {"suite": "mergebench", "harness": "lmeval", "model": "base",
                                                    "limit": 2, "device": "cpu", "tasks": ["ifeval"]}
    assert "fetch/bigcode" not in stages and "eval/math/lmeval" not in stages


def test_a_stage_whose_input_is_outside_the_plan_is_one_line(tmp_path):
    """A hand-made sub-plan that leaves out the harness fetch stages: the runner names what is missing
    instead of waiting forever."""
    from mergebench.pipeline.plan import Plan
    from mergebench.pipeline.runner import Runner
    from mergebench.pipeline.workspace import Workspace
    from mergebench.runtimes.local import LocalRuntime

    full = build_plan("llama-3.2-3b", ["soup"], image_id=lambda image: "local")
    plan = Plan(full.model, [full.by_name["fetch"]])
    with pytest.raises(MergeBenchError, match=r"stage fetch reads fetch/bigcode, which is neither in this plan nor complete"):
        Runner(plan, Workspace(tmp_path / "ws"), LocalRuntime()).run()
