"""Evaluation stage: one model on the tiny suite (in-process lm-eval) or on one MergeBench harness."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

from mergebench.pipeline.execute import StageContext
from mergebench.pipeline.kinds.family import resolve_model, tasks_data

RECORD = "record.json"


def run(ctx: StageContext) -> dict:
    label = ctx.params["model"]
    # the sandboxed execution phase runs the harness on generations only: it is given no model
    model = Path(label) if ctx.params.get("phase") == "execute" else resolve_model(label, ctx.inputs["family"], ctx.inputs)
    if ctx.params["suite"] == "tiny":
        from mergebench.evaluation.tiny_eval import evaluate_tiny

        records = evaluate_tiny({label: model}, ctx.inputs["family"] / "data", ctx.out,
                                limit=ctx.params.get("limit"))
        record = records[label]
    else:
        record = _harness(ctx, label, model)
    if record is not None:
        record.sources = [ctx.final_path(src) for src in record.sources]  # not the .partial folder
        (ctx.out / RECORD).write_text(json.dumps(record.to_dict(), indent=2) + "\n")
    return {"model": label, "model_dir": str(model)}


def _harness(ctx: StageContext, label: str, model: Path):
    """Run the harness's processes for this stage's phase (bigcode: generate, then execute in a
    sandboxed stage of its own), then parse what they wrote."""
    from mergebench.evaluation.adapters import ADAPTERS
    from mergebench.evaluation.adapters.bigcode import BigcodeSettings
    from mergebench.evaluation.adapters.execute import parse_record, run_processes
    from mergebench.evaluation.adapters.lmeval import LmEvalSettings

    harness, phase, p = ctx.params["harness"], ctx.params.get("phase"), ctx.params
    adapter = ADAPTERS[harness]
    tasks = tuple(p["tasks"]) if "tasks" in p else adapter.TASKS
    if harness == "lmeval":
        brought = tasks_data(ctx.inputs["family"], "lmeval")
        settings = replace(LmEvalSettings(), limit=p.get("limit"), device=p.get("device"), gen_kwargs=p.get("gen_kwargs"),
                           nltk_data=brought.get("nltk_data") or LmEvalSettings().nltk_data)
        runs = adapter.runs(str(model), str(ctx.out), settings, tasks=tasks)
    elif harness == "bigcode":
        gen_dir = ctx.inputs.get("generations")
        runs = adapter.runs(str(model), str(ctx.out), replace(BigcodeSettings(), limit=p.get("limit")), tasks,
                            generations_dir=str(gen_dir) if gen_dir else None)
        runs = [r for r in runs if r.name.startswith(f"bigcode-{phase}")]
        if phase == "execute" and gen_dir is not None:  # the test cases, from the generation stage's copy
            hf_home = ctx.out / "hf_home"
            shutil.copytree(gen_dir / "hf_home", hf_home, symlinks=True)
            runs = [replace(r, env={**r.env, "HF_HOME": str(hf_home)}) for r in runs]
    else:
        runs = adapter.runs(str(model), str(ctx.out), tasks=tasks)
    run_processes(runs, harness, label, ctx.out / "logs", say=lambda text: print(text, flush=True))
    if harness == "bigcode":
        shutil.rmtree(ctx.out / "hf_home", ignore_errors=True)
    if phase == "generate":
        adapter.export_datasets(tasks, Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")),
                                ctx.out / "hf_home")
        return None
    return parse_record(adapter, ctx.out, label, harness, tasks if harness == "bigcode" else None)
