"""Option parsing shared by several commands."""

from __future__ import annotations

from typing import Any

import yaml

from mergebench.errors import MergeBenchError


def parse_sets(pairs: tuple[str, ...], example: str = "lambda=0.4") -> dict[str, Any]:
    """NAME=VALUE pairs, values parsed as YAML so that 1e-3 is a float and true a bool."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise MergeBenchError(f"--set {pair!r}: expected NAME=VALUE, e.g. --set {example}")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out
