"""Which tensors are merged, and which ones a global threshold ranks.

Default: everything but embeddings and lm_head, which stay the base's (the reference's choice, which
also sidesteps specialists with extra vocabulary rows). Glob patterns override it: an include list
replaces the default set, an exclude list removes from it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

DEFAULT_EXCLUDE = ("*embed*", "lm_head.*")


def natural_key(name: str) -> list:
    """Sort layers numerically: layers.2 before layers.10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def merged_names(names: Iterable[str], include: Iterable[str] = (), exclude: Iterable[str] = ()) -> list[str]:
    include, exclude = tuple(include), tuple(exclude)
    if include:
        chosen = [n for n in names if _matches(n, include)]
    else:
        chosen = [n for n in names if not _matches(n, DEFAULT_EXCLUDE)]
    return [n for n in chosen if not _matches(n, exclude)]


def threshold_names(names: Iterable[str], merged: Iterable[str], mode: str) -> list[str]:
    """reference: every tensor whose name lacks 'embed' (an untied lm_head counts); merged: the merged set."""
    if mode == "merged":
        return list(merged)
    return [n for n in names if "embed" not in n]
