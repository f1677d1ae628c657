"""The report as markdown, JSON and a rich table; the same rows everywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mergebench.catalog import DOMAIN_NAMES
from mergebench.report.scores import ModelScores, forgetting, normalized_performance, retention

ORDER = {"base": 0, "specialist": 1, "multitask": 2, "merge": 3}


def rows(models: dict[str, ModelScores]) -> list[dict[str, Any]]:
    specialists = {d: models[d] for d in DOMAIN_NAMES if d in models}
    base = models.get("base")
    out = []
    for m in sorted(models.values(), key=lambda m: (ORDER[m.role], m.label)):
        out.append({
            "model": m.label, "role": m.role,
            **{d: m.domains.get(d) for d in DOMAIN_NAMES},
            "np": normalized_performance(m, specialists, "domain"),
            "np_dataset": normalized_performance(m, specialists, "dataset"),
            "held_out": m.held_out, "kept_of_base": forgetting(m, base),
            "retention": retention(m, specialists),
            "merge_seconds": m.cost.get("seconds"), "merge_peak_mib": _mib(m.cost.get("peak_rss_bytes")),
        })
    return out


def _mib(b):
    return None if b is None else round(b / 2**20, 1)


def _fmt(v, digits=3):
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown(model: str, table: list[dict[str, Any]], published: dict[str, Any] | None = None) -> str:
    head = ["model", "role", *DOMAIN_NAMES, "NP", "NP (per dataset)", "held-out", "kept of base", "merge s",
            "merge peak MiB"]
    lines = [f"# MergeBench report: {model}", "",
             "Domain scores (higher is better), normalized performance NP = mean over domains of "
             "score / specialist's score, held-out = the general suite no specialist trains "
             "(kept of base = held-out / base's held-out).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        cells = [r["model"], r["role"], *[_fmt(r[d]) for d in DOMAIN_NAMES], _fmt(r["np"]), _fmt(r["np_dataset"]),
                 _fmt(r["held_out"]), _fmt(r["kept_of_base"]), _fmt(r["merge_seconds"], 2),
                 _fmt(r["merge_peak_mib"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    if published:
        lines += ["", "## Published figures (authors' raw results)", ""]
        lines += ["| model | " + " | ".join(DOMAIN_NAMES) + " |", "|" + "---|" * (len(DOMAIN_NAMES) + 1)]
        for label, domains in published.items():
            lines.append(f"| {label} | " + " | ".join(_fmt(domains.get(d)) for d in DOMAIN_NAMES) + " |")
    return "\n".join(lines) + "\n"


def write(out_dir: Path, model: str, table: list[dict[str, Any]], published: dict[str, Any] | None = None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(markdown(model, table, published))
    (out_dir / "report.json").write_text(json.dumps({"model": model, "rows": table, "published": published},
                                                    indent=2) + "\n")
    return [out_dir / "report.md", out_dir / "report.json"]


def rich_table(model: str, table: list[dict[str, Any]]):
    from rich.table import Table

    t = Table(title=f"MergeBench · {model}")
    for col in ("model", "role", *DOMAIN_NAMES, "NP", "held-out", "merge s"):
        t.add_column(col, justify="left" if col in ("model", "role") else "right")
    for r in table:
        t.add_row(r["model"], r["role"], *[_fmt(r[d]) for d in DOMAIN_NAMES], _fmt(r["np"]), _fmt(r["held_out"]),
                  _fmt(r["merge_seconds"], 2))
    return t
