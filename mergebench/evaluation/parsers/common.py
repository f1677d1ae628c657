"""What every result parser shares: the error type, JSON loading, and the catalog's completeness check.

A raw file that silently lacks a metric would give a wrong domain score much later, far from its
cause, so parsers fail at once with a one-line message naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mergebench.catalog import TASKS
from mergebench.errors import MergeBenchError


class ResultParseError(MergeBenchError, ValueError):
    """A raw harness output that is unreadable, malformed, or lacks a metric the catalog expects."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def load_json_object(path: str | Path) -> dict[str, Any]:
    """Read a JSON file whose top level must be an object."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ResultParseError(path, f"cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ResultParseError(path, "is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ResultParseError(
            path,
            f"is not valid JSON (truncated or corrupt?): {error.msg} at line {error.lineno} column {error.colno}",
        ) from None
    if not isinstance(data, dict):
        raise ResultParseError(path, f"top level is a JSON {type(data).__name__}, expected an object")
    return data


def as_metric(value: Any) -> float | None:
    """The value as a finite float, or None for anything else ("N/A", null, NaN, booleans, objects)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def require_metrics(path: str | Path, task: str, metrics: dict[str, float], raw: dict[str, Any]) -> None:
    """Fail if a catalog task present in the file lacks one of its required metrics, or has a non-number.

    `raw` maps the same keys to the values as written, so the message can show what was found instead.
    Tasks the catalog does not score (e.g. hendrycks_math) are kept but not checked.
    """
    spec = TASKS.get(task)
    if spec is None:
        return
    for key in spec.required_metrics:
        if key in metrics:
            continue
        if key in raw:
            raise ResultParseError(path, f"task {task!r} metric {key!r} is not a finite number: {raw[key]!r}")
        raise ResultParseError(
            path, f"task {task!r} lacks metric {key!r} (found: {', '.join(raw) or 'none'})"
        )


def section(path: str | Path, data: dict[str, Any], key: str, *, required: bool = True) -> dict[str, Any]:
    """A nested object of the raw file, checked to be an object."""
    if key not in data:
        if required:
            raise ResultParseError(path, f"has no {key!r} section")
        return {}
    value = data[key]
    if not isinstance(value, dict):
        raise ResultParseError(path, f"section {key!r} is a JSON {type(value).__name__}, expected an object")
    return value


def default_label(path: str | Path) -> str:
    """The label of a model when none is given: its result folder's name, as MergeBench lays them out."""
    return Path(path).resolve().parent.name
