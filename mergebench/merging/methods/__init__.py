"""The registry of merging methods, by name (data-free ones, and those reading statistics)."""

from __future__ import annotations

from mergebench.errors import MergeBenchError
from mergebench.merging.methods.consensus import CONSENSUS
from mergebench.merging.methods.dare import DARE
from mergebench.merging.methods.fisher import FISHER
from mergebench.merging.methods.linear import SOUP, TASK_ARITHMETIC
from mergebench.merging.methods.localize_stitch import LOCALIZE_STITCH
from mergebench.merging.methods.plugins import entry_point_methods, is_reference, load_reference
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


def all_methods() -> dict[str, MethodSpec]:
    """The built-in methods, then every installed plug-in (mergebench/merging/methods/plugins.py)."""
    return {**METHODS, **entry_point_methods(set(METHODS) | set(ALIASES))}


def get_method(name: str) -> MethodSpec:
    """A built-in method by name or alias, an installed plug-in by its entry-point name, or a plug-in
    reference `module.path:ATTRIBUTE`."""
    if is_reference(name):
        return load_reference(name)
    key = ALIASES.get(name.lower(), name.lower())
    if key in METHODS:
        return METHODS[key]
    known = all_methods()
    if name in known:
        return known[name]
    raise MergeBenchError(f"unknown method {name!r} (known: {', '.join(known)}; or a plug-in module.path:ATTRIBUTE)")


__all__ = ["METHODS", "MethodSpec", "Param", "TensorContext", "all_methods", "get_method"]
