#!/usr/bin/env python3
"""Summarize the published raw results in results/reference/ into mergebench/report/published.json."""

from __future__ import annotations

import json
from pathlib import Path

from mergebench.evaluation.parsers import import_results
from mergebench.evaluation.scores import summarize

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"Llama-3.2-3B": "llama-3.2-3b", "Llama-3.1-8B": "llama-3.1-8b"}


def main() -> None:
    out = {}
    for folder in sorted((ROOT / "results" / "reference").iterdir()):
        summary = summarize(import_results(folder))
        base = folder.name.split("-RegMean")[0]
        out[folder.name] = {"model": MODELS[base], "domains": summary.domains, "tasks": summary.tasks}
    target = ROOT / "mergebench" / "report" / "published.json"
    target.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
