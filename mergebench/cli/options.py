"""Option parsing shared by several commands."""

from __future__ import annotations

import re
from typing import Any

import yaml

from mergebench.errors import MergeBenchError


def parse_sets(pairs: tuple[str, ...], example: str = "lambda=0.4") -> dict[str, Any]:
    """NAME=VALUE pairs, values parsed as YAML so that 0.5 is a float and true a bool.

    YAML 1.1 reads 1e-3 (no dot) as a string; a value that is a plain number in exponent form is a float.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise MergeBenchError(f"--set {pair!r}: expected NAME=VALUE, e.g. --set {example}")
        key, value = pair.split("=", 1)
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str) and _EXPONENT.fullmatch(parsed.strip()):
            parsed = float(parsed)
        out[key.strip()] = parsed
    return out


def comma_list(text: str | None) -> tuple[str, ...] | None:
    """"a, b,c" as ("a", "b", "c"); None or "" as None (the option was not given)."""
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else None


_EXPONENT = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")
