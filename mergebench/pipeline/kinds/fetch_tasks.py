"""Fetch stage of one harness (fetch/lmeval, fetch/bigcode, fetch/safety): everything that harness reads,
prepared inside its own image while the hub is reachable, so its evaluation stages find it offline.

Each harness loads its datasets with its own `datasets` version, and what one version prepares another
may not read offline; so the preparation is the harness's own code (its tasks built, which downloads
their data into the workspace's HF_DATASETS_CACHE), run where that harness runs. The adapters say how
(`prepare`); this stage only records what was brought. NLTK data and the WildGuard judge come the same way.
"""

from __future__ import annotations

from mergebench.pipeline.execute import StageContext

#: Where a fetch stage's list of what it brought is kept, read by `tasks_data` below.
BROUGHT = "brought.json"


def run(ctx: StageContext) -> dict:
    import json

    from mergebench.evaluation.adapters import ADAPTERS

    harness = ctx.params["harness"]
    said = ADAPTERS[harness].prepare(tuple(ctx.params["tasks"]), ctx.out, say=lambda text: print(text, flush=True))
    if "nltk_data" in said:  # written into the .partial folder; read later where it will be
        said["nltk_data"] = ctx.final_path(said["nltk_data"])
    brought = {"harness": harness, "datasets": ctx.params["datasets"], "models": ctx.params.get("models", []),
               "nltk": ctx.params.get("nltk", []), **said}
    (ctx.out / BROUGHT).write_text(json.dumps(brought, indent=2) + "\n")
    return {"brought": brought}
