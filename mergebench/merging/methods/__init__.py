"""The registry of merging methods, by name (data-free ones, and those reading statistics)."""

from __future__ import annotations

from mergebench.errors import MergeBenchError
from mergebench.merging.methods.consensus import CONSENSUS
from mergebench.merging.methods.dare import DARE
from mergebench.merging.methods.fisher import FISHER
from mergebench.merging.methods.linear import SOUP, TASK_ARITHMETIC
from mergebench.merging.methods.localize_stitch import LOCALIZE_STITCH
from mergebench.merging.methods.regmean import REGMEAN, REGMEAN_PP
from mergebench.merging.methods.spec import MethodSpec, Param, TensorContext
from mergebench.merging.methods.ties import TIES
from mergebench.merging.methods.varm import VARM

METHODS: dict[str, MethodSpec] = {
    m.name: m for m in (SOUP, TASK_ARITHMETIC, TIES, DARE, CONSENSUS, LOCALIZE_STITCH, VARM, FISHER, REGMEAN, REGMEAN_PP)
}
ALIASES = {"model_soup": "soup", "ta": "task_arithmetic", "tall": "consensus", "localize-and-stitch": "localize_stitch",
           "fusechat": "varm", "task-arithmetic": "task_arithmetic",
           "regmean++": "regmean_pp", "regmeanpp": "regmean_pp"}


def get_method(name: str) -> MethodSpec:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in METHODS:
        raise MergeBenchError(f"unknown method {name!r} (known: {', '.join(METHODS)})")
    return METHODS[key]


__all__ = ["METHODS", "MethodSpec", "Param", "TensorContext", "get_method"]
