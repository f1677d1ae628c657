"""Fetch stage of the tiny profile: build the whole family (it is made, not downloaded)."""

from __future__ import annotations

from mergebench.pipeline.execute import StageContext


def run(ctx: StageContext) -> dict:
    from mergebench.tiny.build import FamilyConfig, build_family

    cfg = FamilyConfig(seed=ctx.params.get("seed", 0))
    paths = build_family(ctx.out, cfg, progress=lambda name, done, total: None)
    return {"models": {k: str(v) for k, v in paths.items()}, "family_config": cfg.key()}
