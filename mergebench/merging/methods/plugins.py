"""Merging methods from outside the kit: a researcher's own, merged by the same streaming engine and run
through the same MergeBench protocol as the built-in ones.

A plug-in is a `MethodSpec` (mergebench/merging/methods/spec.py: the function over one tensor's
stacked task vectors, typed settings, and its declared needs) in the user's own package, found by

- an entry point in the group `mergebench.methods` (`[project.entry-points."mergebench.methods"]`
  `my_method = "my_pkg.methods:MY_METHOD"`): listed by `mergebench methods`, selected by its name;
- or a reference `my_pkg.my_module:MY_METHOD` given wherever a method name goes (`merge --method`,
  `reproduce --methods`), for a package that is importable but not installed.

Its name must not shadow a built-in method. Every problem (no such module or attribute, not a
MethodSpec, a broken entry point) is one line naming the reference.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from mergebench.errors import MergeBenchError
from mergebench.merging.methods.spec import MethodSpec

GROUP = "mergebench.methods"


def is_reference(name: str) -> bool:
    return ":" in name


def load_reference(ref: str) -> MethodSpec:
    """`module.path:ATTRIBUTE` → the MethodSpec it names."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise MergeBenchError(f"method {ref!r}: a plug-in reference is module.path:ATTRIBUTE")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise MergeBenchError(f"method {ref!r}: cannot import {module_name} ({e})") from None
    if not hasattr(module, attr):
        raise MergeBenchError(f"method {ref!r}: {module_name} has no attribute {attr!r}")
    return _checked(getattr(module, attr), f"method {ref!r}")


def _checked(obj, where: str) -> MethodSpec:
    if not isinstance(obj, MethodSpec):
        raise MergeBenchError(f"{where}: is a {type(obj).__name__}, not a mergebench MethodSpec")
    return obj


def entry_point_methods(builtin: set[str]) -> dict[str, MethodSpec]:
    """Every installed plug-in of the `mergebench.methods` group, by entry-point name."""
    found = {}
    for ep in entry_points(group=GROUP):
        where = f"plug-in {ep.name!r} ({ep.value}, entry point of {ep.dist.name if ep.dist else 'unknown'})"
        if ep.name in builtin:
            raise MergeBenchError(f"{where}: shadows the built-in method {ep.name!r}; rename the entry point")
        try:
            spec = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plug-in names itself, whatever it raised
            raise MergeBenchError(f"{where}: cannot load ({type(e).__name__}: {e})") from None
        found[ep.name] = _checked(spec, where)
    return found
