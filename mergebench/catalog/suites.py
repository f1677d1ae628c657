"""The merge suite MergeBench runs: every method with the paper's reference hyperparameters.

Data-dependent methods name the statistics they need; the plan adds one statistics stage per
specialist for them. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mergebench.catalog.domains import unknown


@dataclass(frozen=True)
class SuiteMethod:
    name: str  # label in reports
    method: str  # engine method name
    settings: dict[str, Any] = field(default_factory=dict)
    stats: str | None = None  # "gram" | "fisher" | "mask": one statistics stage per specialist
    data: bool = False  # reads validation data itself during the merge (RegMean++)


MERGE_SUITE: tuple[SuiteMethod, ...] = (
    SuiteMethod("soup", "soup"),
    SuiteMethod("task_arithmetic", "task_arithmetic", {"lambda": 0.4}),
    SuiteMethod("ties", "ties", {"K": 0.3, "lambda": 0.4}),
    SuiteMethod("dare", "dare", {"p": 0.9, "lambda": 0.4, "seed": 0}),
    SuiteMethod("consensus", "consensus", {"lambda_t": [0.2], "k": 2, "lambda": 0.4}),
    SuiteMethod("localize_stitch", "localize_stitch", {"sparsity": 0.1}),
    SuiteMethod("localize_stitch_trained", "localize_stitch", {"masks": "trained"}, stats="mask"),
    SuiteMethod("varm", "varm"),
    SuiteMethod("fisher", "fisher", {}, stats="fisher"),
    SuiteMethod("regmean", "regmean", {"alpha": 0.5}, stats="gram"),
    SuiteMethod("regmean_pp", "regmean_pp", {"alpha": 0.1}, data=True),
)
SUITE_BY_NAME = {m.name: m for m in MERGE_SUITE}


def select_methods(names: list[str] | None) -> tuple[SuiteMethod, ...]:
    if not names:
        return MERGE_SUITE
    for n in names:
        if n not in SUITE_BY_NAME:
            raise unknown("method", n, SUITE_BY_NAME)
    return tuple(m for m in MERGE_SUITE if m.name in names)
