"""Evaluation stage: one model on the tiny suite (in-process lm-eval) or on one MergeBench harness."""

from __future__ import annotations

import json
from pathlib import Path

from mergebench.pipeline.execute import StageContext
from mergebench.pipeline.kinds.family import resolve_model

RECORD = "record.json"


def run(ctx: StageContext) -> dict:
    label = ctx.params["model"]
    model = resolve_model(label, ctx.inputs["family"], ctx.inputs)
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
    from mergebench.evaluation.adapters.execute import parse_record, run_processes

    harness, phase = ctx.params["harness"], ctx.params.get("phase")
    adapter = ADAPTERS[harness]
    if harness == "bigcode":
        gen_dir = ctx.inputs.get("generations")
        runs = adapter.runs(str(model), str(ctx.out), generations_dir=str(gen_dir) if gen_dir else None)
        runs = [r for r in runs if r.name.startswith(f"bigcode-{phase}")]
    else:
        runs = adapter.runs(str(model), str(ctx.out))
    run_processes(runs, harness, label, ctx.out / "logs", say=lambda text: print(text, flush=True))
    return None if phase == "generate" else parse_record(adapter, ctx.out, label, harness)
