"""Statistics stage: Gram matrices, diagonal Fisher or trained Localize-and-Stitch masks of one
specialist on its own validation data."""

from __future__ import annotations

from mergebench.pipeline.execute import StageContext
from mergebench.pipeline.kinds.family import model_dir, prompt_template, validation_source


def run(ctx: StageContext) -> dict:
    from mergebench.merging.datapass.stats import StatsJob, compute_stats

    family, domain, kind = ctx.inputs["family"], ctx.params["domain"], ctx.params["kind"]
    result = compute_stats(StatsJob(kind=kind, model=str(model_dir(family, domain)),
                                    data=validation_source(family, domain), samples=ctx.params["samples"],
                                    seed=ctx.params.get("seed", 0), out=str(ctx.out / "stats"), domain=domain,
                                    template=prompt_template(family),
                                    base=str(model_dir(family, "base")) if kind == "mask" else None))
    return {"stats": {"samples": result.samples, "tokens": result.tokens, "seconds": result.seconds}}
