"""Report stage: every evaluation of the plan into report.md, report.json and plots."""

from __future__ import annotations

import json
from pathlib import Path

from mergebench.evaluation.records import ResultRecord
from mergebench.pipeline.execute import StageContext
from mergebench.pipeline.kinds.eval import RECORD
from mergebench.pipeline.workspace import MANIFEST


def _merge_cost(eval_dir: Path) -> dict:
    """The merge stage's time and peak memory, found through the evaluated model's directory."""
    manifest = json.loads((eval_dir / MANIFEST).read_text())
    model_dir = Path(manifest.get("model_dir", ""))
    merge_manifest = model_dir.parent / MANIFEST
    if model_dir.name == "model" and merge_manifest.is_file():
        return json.loads(merge_manifest.read_text()).get("merge", {})
    return {}


def collect(ctx: StageContext):
    from mergebench.report.scores import harness_scores, tiny_scores

    by_model: dict[str, list[tuple[ResultRecord, Path]]] = {}
    for role, path in ctx.inputs.items():
        if role.startswith("eval:") and (path / RECORD).is_file():
            label = role.removeprefix("eval:").split("/")[0]
            by_model.setdefault(label, []).append((ResultRecord.from_dict(json.loads((path / RECORD).read_text())), path))
    models = {}
    for label, items in by_model.items():
        records = [r for r, _ in items]
        if ctx.params["model"] == "tiny":
            scores = tiny_scores(label, records[0])
        else:
            scores = harness_scores(label, records)
        scores.cost = _merge_cost(items[0][1])
        models[label] = scores
    return models


def run(ctx: StageContext) -> dict:
    from mergebench.report.published import published_for
    from mergebench.report.render import rows, write

    models = collect(ctx)
    table = rows(models)
    published = published_for(ctx.params["model"])
    files = write(ctx.out, ctx.params["model"], table, published)
    try:
        from mergebench.report.plots import write_plots

        files += write_plots(ctx.out / "plots", ctx.params["model"], table)
    except ImportError:
        print("matplotlib is not installed: plots skipped (pip install matplotlib)")
    return {"files": [str(f.relative_to(ctx.out)) for f in files]}
