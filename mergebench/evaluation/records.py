"""One harness run's results in one harness-independent shape, so scoring never reads raw formats.

Every metric variant the harness wrote is kept under the harness's own key (e.g. lm-eval's
"exact_match,flexible-extract"), because the paper does not say which variant it scored and the
choice must stay open after the run. Standard errors are kept apart so they never pass for metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mergebench.errors import MergeBenchError

#: Bumped when the JSON shape changes incompatibly.
RECORD_SCHEMA = 1


class RecordFormatError(MergeBenchError, ValueError):
    """A stored record that is not a valid ResultRecord (hand-edited, truncated, other schema)."""


@dataclass
class ResultRecord:
    """What one harness reported for one model: task -> {metric variant -> value}, plus provenance."""

    model: str
    harness: str
    metrics: dict[str, dict[str, float]]
    stderr: dict[str, dict[str, float]] = field(default_factory=dict)
    harness_version: str | None = None
    harness_commit: str | None = None
    #: Inference backend that generated the outputs ("vllm", "hf"), where the raw file says or implies it.
    backend: str | None = None
    #: The raw files this record was read from.
    sources: list[str] = field(default_factory=list)
    #: Run settings worth keeping (seeds, n-shot, sampling, task versions); JSON values only.
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; from_dict(to_dict()) gives back an equal record."""
        return {
            "schema": RECORD_SCHEMA,
            "model": self.model,
            "harness": self.harness,
            "harness_version": self.harness_version,
            "harness_commit": self.harness_commit,
            "backend": self.backend,
            "metrics": {task: dict(values) for task, values in self.metrics.items()},
            "stderr": {task: dict(values) for task, values in self.stderr.items()},
            "sources": list(self.sources),
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ResultRecord:
        """Rebuild a record from to_dict() output, rejecting anything of another shape."""
        if not isinstance(data, dict):
            raise RecordFormatError(f"a result record must be a JSON object, not {type(data).__name__}")
        if data.get("schema") != RECORD_SCHEMA:
            raise RecordFormatError(f"result record schema {data.get('schema')!r} is not {RECORD_SCHEMA}")
        for key in ("model", "harness"):
            if not isinstance(data.get(key), str):
                raise RecordFormatError(f"result record field {key!r} must be a string")
        for key in ("harness_version", "harness_commit", "backend"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise RecordFormatError(f"result record field {key!r} must be a string or null")
        sources = data.get("sources", [])
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise RecordFormatError("result record field 'sources' must be a list of strings")
        config = data.get("config", {})
        if not isinstance(config, dict):
            raise RecordFormatError("result record field 'config' must be an object")
        return cls(
            model=data["model"],
            harness=data["harness"],
            metrics=_table(data.get("metrics"), "metrics"),
            stderr=_table(data.get("stderr", {}), "stderr"),
            harness_version=data.get("harness_version"),
            harness_commit=data.get("harness_commit"),
            backend=data.get("backend"),
            sources=list(sources),
            config=dict(config),
        )


def _table(raw: Any, name: str) -> dict[str, dict[str, float]]:
    """Validate a task -> {variant -> number} table; ints become floats so equality survives JSON."""
    if not isinstance(raw, dict):
        raise RecordFormatError(f"result record field {name!r} must be an object of tasks")
    table: dict[str, dict[str, float]] = {}
    for task, values in raw.items():
        if not isinstance(values, dict):
            raise RecordFormatError(f"result record {name} of task {task!r} must be an object")
        row: dict[str, float] = {}
        for variant, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RecordFormatError(
                    f"result record {name} {task!r}/{variant!r} is not a number: {value!r}"
                )
            row[variant] = float(value)
        table[task] = row
    return table
