"""The authors' published figures, as domain and task scores, for the report's comparison column.

Computed from the raw files in results/reference/ by scripts/extract_published.py (so the package
carries a few numbers, not the 120 KB raw files).
"""

from __future__ import annotations

import json
from pathlib import Path

FILE = Path(__file__).with_name("published.json")


def published_for(model: str) -> dict[str, dict[str, float]] | None:
    """{label: {domain: score}} published for this base model, or None."""
    if not FILE.is_file():
        return None
    data = json.loads(FILE.read_text())
    entries = {label: e["domains"] for label, e in data.items() if e["model"] == model}
    return entries or None
