"""Merge stage: the base and its five specialists through the streaming engine.

Data-dependent methods get each specialist's statistics (from the stats stages, in domain order) or
its validation data; their cost in the report includes those data passes.
"""

from __future__ import annotations

import json

from mergebench.catalog import DOMAIN_NAMES
from mergebench.pipeline.execute import StageContext
from mergebench.pipeline.kinds.family import model_dir, prompt_template, specialists, validation_source
from mergebench.pipeline.workspace import MANIFEST


def run(ctx: StageContext) -> dict:
    from mergebench.merging.run import MergeJob, merge

    family = ctx.inputs["family"]
    experts = specialists(family)
    stats = [ctx.inputs[f"stats_{d}"] / "stats" for d in DOMAIN_NAMES if f"stats_{d}" in ctx.inputs]
    settings = dict(ctx.params.get("settings", {}))
    if ctx.params.get("data"):
        settings.setdefault("template", prompt_template(family))
    job = MergeJob(ctx.params["method"], str(model_dir(family, "base")), [str(p) for p in experts.values()],
                   str(ctx.out / "model"), settings=settings,
                   labels=list(DOMAIN_NAMES), device=ctx.params.get("device", "auto"),
                   stats=[str(p) for p in stats],
                   data=[validation_source(family, d) for d in DOMAIN_NAMES] if ctx.params.get("data") else [])
    result = merge(job)
    data_pass = sum(json.loads((p.parent / MANIFEST).read_text())["seconds"] for p in stats)
    return {"merge": {"seconds": result.seconds + data_pass, "merge_seconds": result.seconds,
                      "data_pass_seconds": data_pass, "peak_rss_bytes": result.peak_rss_bytes,
                      "peak_cuda_bytes": result.peak_cuda_bytes}}
