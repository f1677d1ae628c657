"""Fetch stage for checkpoints already on disk: a base and its specialists from local directories.

For researchers who bring their own models (and for tests): it records where each role lives, the
same way a hub fetch does, so every later stage reads them identically.
"""

from __future__ import annotations

import json
from pathlib import Path

from mergebench.catalog import DOMAIN_NAMES
from mergebench.errors import MergeBenchError
from mergebench.pipeline.execute import StageContext
from mergebench.pipeline.kinds.family import MODELS_FILE


def run(ctx: StageContext) -> dict:
    paths = {role: str(Path(p).resolve()) for role, p in ctx.params["paths"].items()}
    missing = [r for r in ("base", *DOMAIN_NAMES) if r not in paths]
    if missing:
        raise MergeBenchError(f"local family: no path for {missing[0]!r} (needs base and {', '.join(DOMAIN_NAMES)})")
    for role, path in paths.items():
        if not (Path(path) / "config.json").is_file():
            raise MergeBenchError(f"local family: {role} at {path} is not a model directory (no config.json)")
    (ctx.out / MODELS_FILE).write_text(json.dumps(paths, indent=2) + "\n")
    return {"models": paths}
