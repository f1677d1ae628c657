"""The CI slice of `make rehearse`: MergeBench's real path for a hub family, end to end on this machine.

SmolLM2-135M-Instruct (real weights) and five few-step specialists are served by the hub double on
127.0.0.1 (its base gated, as Llama's is); `mergebench reproduce --model <family file>` then fetches them
online, prepares lm-eval's datasets and NLTK data in the fetch/lmeval stage, merges with two methods and
evaluates with the real lm-eval tasks gsm8k_cot, ifeval and arc_fr (an Okapi task) through the kit's
adapter and parser, all with the hub offline, and writes the report. The slice keeps generations short
(--gen-kwargs max_gen_toks=32) and evaluates three models; `make rehearse` runs the whole protocol.
bigcode runs too when a clone of the harness's pinned commit is given (MB_BIGCODE_SOURCE).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from tinypipeline import EXE

SLICE = ["--methods", "task_arithmetic,ties", "--eval-limit", "1", "--tasks", "gsm8k_cot,ifeval,arc_fr",
         "--eval-models", "base,math,merge:ties", "--gen-kwargs", "max_gen_toks=32"]


def rehearse(ws: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "rehearse", "--workspace", str(ws), "--results", str(ws / "results"), *extra],
                          capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    ws = tmp_path_factory.mktemp("rehearsal")
    run = rehearse(ws, *SLICE)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return ws, run


def _records(ws: Path) -> dict[str, dict]:
    records = [json.loads(p.read_text()) for p in (ws / "pipeline" / "evals").glob("eval-*-lmeval-*/record.json")]
    return {r["model"]: r for r in records}


def test_the_real_lm_eval_tasks_score_every_model_through_the_kit_s_parser(rehearsal):
    ws, _ = rehearsal
    records = _records(ws)
    assert set(records) == {"base", "math", "merge:ties"}
    for record in records.values():
        assert set(record["metrics"]) == {"gsm8k_cot", "ifeval", "arc_fr"}
        assert record["harness"] == "lmeval" and record["harness_version"] == "0.4.13"
        assert 0 <= record["metrics"]["ifeval"]["prompt_level_strict_acc,none"] <= 1
        assert record["metrics"]["arc_fr"]["acc,none"] in (0.0, 1.0)  # one row each
    report = json.loads((ws / "results" / "smollm2-rehearsal" / "report.json").read_text())
    assert {row["model"] for row in report["rows"]} == {"base", "math", "merge:ties"}


def test_evaluations_ran_offline_with_mergebench_s_argv(rehearsal):
    ws, _ = rehearsal
    logs = "\n".join(p.read_text() for p in (ws / "pipeline" / "runs").glob("eval-*lmeval*/log.txt"))
    commands = [line for line in logs.splitlines() if " lm_eval --model hf " in line]
    assert len(commands) == 9  # three models, three task groups
    assert all("HF_HUB_OFFLINE=1" in c and "HF_DATASETS_OFFLINE=1" in c for c in commands)
    math = [c for c in commands if "--tasks gsm8k_cot " in c]
    instruction = [c for c in commands if "--tasks ifeval " in c]
    assert len(math) == len(instruction) == 3
    assert all("--num_fewshot" not in c for c in math)  # gsm8k_cot keeps its own 8 shots
    assert all("--num_fewshot 0 --log_samples --limit 1 --device cpu" in c for c in instruction)
    assert all(f"NLTK_DATA={ws.resolve()}/pipeline/data/fetch-lmeval-" in c for c in commands)


def test_the_fetch_stages_brought_everything_and_the_double_answered_every_request(rehearsal):
    ws, run = rehearsal
    brought = json.loads(next((ws / "pipeline" / "data").glob("fetch-lmeval-*/brought.json")).read_text())
    assert brought["datasets"] == ["alexandrainst/m_arc:fr", "google/IFEval", "openai/gsm8k:main"]
    assert (Path(brought["nltk_data"]) / "tokenizers" / "punkt_tab" / "english" / "abbrev_types.txt").is_file()
    cached = {p.name for p in (ws / "pipeline" / "hf" / "datasets").iterdir()}
    assert {"openai___gsm8k", "google___if_eval", "alexandrainst___m_arc"} <= cached  # prepared Arrow files
    optional = ("/api/agent-harnesses", ".py", ".huggingface.yaml", "dataset_infos.json")
    misses = (ws / "rehearsal" / "hub-misses.txt").read_text().splitlines()
    assert [m for m in misses if not m.endswith(optional)] == []
    models = json.loads(next((ws / "pipeline" / "models").glob("fetch-*/models.json")).read_text())
    assert set(models) == {"base", "instruction", "math", "multilingual", "coding", "safety"}
    assert all("models--mergebench-rehearsal--SmolLM2-135M-" in p for p in models.values())


def test_a_second_rehearsal_resumes_with_nothing_to_do(rehearsal):
    ws, _ = rehearsal
    again = rehearse(ws, *SLICE)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 stage(s) run, 8 already complete" in again.stderr


def test_a_bigcode_source_that_is_not_a_checkout_is_one_line(tmp_path):
    run = rehearse(tmp_path / "ws", "--bigcode-source", str(tmp_path))
    assert run.returncode != 0 and not (tmp_path / "ws").exists()
    assert f"error: {tmp_path}: not a bigcode-evaluation-harness checkout (no bigcode_eval/)" in run.stderr


@pytest.mark.skipif(not os.environ.get("MB_BIGCODE_SOURCE"),
                    reason="bigcode-evaluation-harness source is not present (set MB_BIGCODE_SOURCE to a clone of "
                           "its pinned commit; GitHub is unreachable from CI)")
def test_bigcode_generates_and_executes_both_tasks(tmp_path):
    ws = tmp_path / "ws"
    run = rehearse(ws, "--methods", "task_arithmetic", "--eval-limit", "1", "--tasks", "humanevalplus,mbppplus",
                   "--eval-models", "base", "--bigcode-source", os.environ["MB_BIGCODE_SOURCE"])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    record = json.loads(next((ws / "pipeline" / "evals").glob("eval-base-bigcode-*/record.json")).read_text())
    assert set(record["metrics"]) >= {"humanevalplus", "mbppplus"}
    generated = json.loads(next((ws / "pipeline" / "evals").glob(
        "eval-base-bigcode-generate-*/bigcode/generations_humanevalplus.json")).read_text())
    assert len(generated) == 1 and len(generated[0]) == 10  # one problem, MergeBench's n_samples
