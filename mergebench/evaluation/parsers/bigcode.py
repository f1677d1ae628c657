"""Parser for bigcode-evaluation-harness metric files (MergeBench's code_eval.json).

The harness writes {task: {"pass@k": value}, "config": {its argparse namespace}}. The config holds the
sampling settings that change pass@k (temperature, top_p, n_samples, seed, precision), so it is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mergebench.evaluation.parsers.common import (
    ResultParseError,
    as_metric,
    default_label,
    load_json_object,
    require_metrics,
    section,
)
from mergebench.evaluation.records import ResultRecord

HARNESS = "bigcode"


def parse_bigcode(path: str | Path, model: str | None = None) -> ResultRecord:
    """Read one bigcode metric file into a record; `model` labels it (default: its folder's name)."""
    path = Path(path)
    data = load_json_object(path)
    config = section(path, data, "config", required=False)
    metrics: dict[str, dict[str, float]] = {}
    for task, entry in data.items():
        if task == "config":
            continue
        if not isinstance(entry, dict):
            raise ResultParseError(
                path, f"task {task!r} is a JSON {type(entry).__name__}, expected an object"
            )
        values = {key: number for key, value in entry.items() if (number := as_metric(value)) is not None}
        require_metrics(path, task, values, entry)
        metrics[task] = values
    if not metrics:
        raise ResultParseError(path, "reports no task (only a config section)")

    # The harness generates with transformers itself, unless it scored generations made elsewhere.
    backend = None if config.get("load_generations_path") else "hf"
    kept: dict[str, Any] = dict(config)
    if isinstance(config.get("model"), str):
        kept["model_path"] = config["model"]
    return ResultRecord(
        model=model or default_label(path),
        harness=HARNESS,
        metrics=metrics,
        backend=backend,
        sources=[str(path)],
        config=kept,
    )
