"""Statistics stage: Gram matrices or diagonal Fisher of one specialist on its own validation data."""

from __future__ import annotations

from mergebench.pipeline.execute import StageContext
from mergebench.pipeline.kinds.family import model_dir, prompt_template, validation_source


def run(ctx: StageContext) -> dict:
    from mergebench.merging.stats import StatsJob, compute_stats

    family, domain = ctx.inputs["family"], ctx.params["domain"]
    result = compute_stats(StatsJob(kind=ctx.params["kind"], model=str(model_dir(family, domain)),
                                    data=validation_source(family, domain), samples=ctx.params["samples"],
                                    seed=ctx.params.get("seed", 0), out=str(ctx.out / "stats"), domain=domain,
                                    template=prompt_template(family)))
    return {"stats": {"samples": result.samples, "tokens": result.tokens, "seconds": result.seconds}}
