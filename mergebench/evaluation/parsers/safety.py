"""Parser for allenai safety-eval reports (MergeBench's safety_eval.json).

The report is {task: {metric: value | {category: value}}}; per-category breakdowns are flattened to
"metric/category" so a record stays a flat task -> {variant -> value} table. The file names neither the
harness version nor the generation backend, so those stay unknown rather than guessed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mergebench.catalog.domains import CATEGORY_SEP
from mergebench.evaluation.parsers.common import (
    ResultParseError,
    as_metric,
    default_label,
    load_json_object,
    require_metrics,
)
from mergebench.evaluation.records import ResultRecord

HARNESS = "safety"


def _flatten(entry: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in entry.items():
        name = f"{prefix}{CATEGORY_SEP}{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def parse_safety(path: str | Path, model: str | None = None) -> ResultRecord:
    """Read one safety-eval report into a record; `model` labels it (default: its folder's name)."""
    path = Path(path)
    data = load_json_object(path)
    if not data:
        raise ResultParseError(path, "reports no task")
    metrics: dict[str, dict[str, float]] = {}
    for task, entry in data.items():
        if not isinstance(entry, dict):
            raise ResultParseError(
                path, f"task {task!r} is a JSON {type(entry).__name__}, expected an object"
            )
        raw = _flatten(entry)
        values = {key: number for key, value in raw.items() if (number := as_metric(value)) is not None}
        require_metrics(path, task, values, raw)
        metrics[task] = values
    return ResultRecord(
        model=model or default_label(path), harness=HARNESS, metrics=metrics, sources=[str(path)]
    )
