"""Coefficient tuning as in the paper: merge every point of a grid, score each on a validation suite,
keep the best. The chosen merged model is this stage's output, like any merge stage's."""

from __future__ import annotations

import itertools
import json
import shutil

from mergebench.catalog import DOMAIN_NAMES
from mergebench.errors import MergeBenchError
from mergebench.pipeline.execute import StageContext
from mergebench.pipeline.kinds.family import model_dir, specialists


def grid_points(grid: dict[str, list]) -> list[dict]:
    if not grid or any(not isinstance(v, list) or not v for v in grid.values()):
        raise MergeBenchError(f"tuning grid {grid!r}: expected a mapping of setting -> non-empty list")
    keys = sorted(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def run(ctx: StageContext) -> dict:
    from mergebench.evaluation.tiny_eval import evaluate_tiny
    from mergebench.evaluation.tiny_suite import GENERATE_TASKS
    from mergebench.merging.run import MergeJob, merge

    family = ctx.inputs["family"]
    experts = [str(p) for p in specialists(family).values()]
    tasks = tuple(t for t in GENERATE_TASKS if t != "tiny_general")  # choose on the five domains only
    import time

    from mergebench.merging.engine import peak_rss_bytes

    trials = []
    start = time.time()
    for i, point in enumerate(grid_points(ctx.params["grid"])):
        out = ctx.out / "trials" / f"{i:02d}"
        merge(MergeJob(ctx.params["method"], str(model_dir(family, "base")), experts, str(out / "model"),
                       settings={**ctx.params.get("settings", {}), **point}, labels=list(DOMAIN_NAMES)))
        record = evaluate_tiny({f"trial{i}": out / "model"}, family / "data", out, tasks=tasks,
                               split=ctx.params.get("split", "validation"))[f"trial{i}"]
        score = sum(m["acc,none"] for m in record.metrics.values()) / len(tasks)
        trials.append({"settings": point, "validation_score": score, "dir": str(out)})
        print(f"[tune] {point} → {score:.3f}", flush=True)
    best = max(trials, key=lambda t: t["validation_score"])  # first best wins ties: grids are ordered
    shutil.move(str(ctx.out / "trials" / best["dir"].rsplit("/", 1)[-1] / "model"), ctx.out / "model")
    shutil.rmtree(ctx.out / "trials")
    (ctx.out / "tuning.json").write_text(json.dumps({"trials": trials, "chosen": best["settings"]}, indent=2) + "\n")
    # The cost of a tuned merge is the whole search: every trial's merge and validation pass.
    cost = {"seconds": time.time() - start, "peak_rss_bytes": peak_rss_bytes(), "trials": len(trials)}
    return {"merge": cost, "chosen": best["settings"], "trials": [{k: t[k] for k in ("settings", "validation_score")}
                                                   for t in trials]}
