"""Evaluation stage: one model on the tiny suite (in-process lm-eval) or on one MergeBench harness."""

from __future__ import annotations

import json
from pathlib import Path

from mergebench.errors import MergeBenchError
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
        (ctx.out / RECORD).write_text(json.dumps(record.to_dict(), indent=2) + "\n")
    return {"model": label, "model_dir": str(model)}


def _harness(ctx: StageContext, label: str, model: Path):
    """Run the harness's processes for this stage's phase (bigcode: generate, then execute in a
    sandboxed stage of its own), then parse what they wrote."""
    import os
    import subprocess

    from mergebench.evaluation.adapters import ADAPTERS

    harness, phase = ctx.params["harness"], ctx.params.get("phase")
    adapter = ADAPTERS[harness]
    if harness == "bigcode":
        gen_dir = ctx.inputs.get("generations")
        runs = adapter.runs(str(model), str(ctx.out), generations_dir=str(gen_dir) if gen_dir else None)
        runs = [r for r in runs if r.name.startswith(f"bigcode-{phase}")]
    else:
        runs = adapter.runs(str(model), str(ctx.out))
    for run in runs:
        Path(run.out_dir).mkdir(parents=True, exist_ok=True)
        print(f"$ {run.shell()}", flush=True)
        code = subprocess.run(list(run.argv), cwd=run.workdir, env={**os.environ, **run.env}).returncode
        if code != 0:
            raise MergeBenchError(f"{harness} run {run.name} for model {label} exited with code {code}")
    if phase == "generate":
        return None
    parsed = adapter.parse(ctx.out, label)
    return combine_records(parsed if isinstance(parsed, list) else [parsed], label, harness)


def combine_records(records, label, harness):
    """One record from a harness's several outputs (lm-eval writes one per task group)."""
    from mergebench.evaluation.records import ResultRecord

    if len(records) == 1:
        return records[0]
    if not records:
        raise MergeBenchError(f"{harness} wrote no results for model {label}")
    first = records[0]
    return ResultRecord(label, harness, {k: v for r in records for k, v in r.metrics.items()},
                        {k: v for r in records for k, v in r.stderr.items()}, first.harness_version,
                        first.harness_commit, first.backend, [s for r in records for s in r.sources], first.config)
