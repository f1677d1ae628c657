"""PNG plots of the report: NP per method, per-domain retention, performance versus merge cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mergebench.catalog import DOMAIN_NAMES


def write_plots(out_dir: Path, model: str, table: list[dict[str, Any]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    merges = [r for r in table if r["role"] in ("merge", "multitask") and r["np"] is not None]
    paths = []

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar([r["model"] for r in merges], [r["np"] for r in merges], color="#4C72B0")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("normalized performance")
    ax.set_title(f"{model}: normalized performance per method")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    paths.append(out_dir / "np_per_method.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(1, len(DOMAIN_NAMES))
    for i, d in enumerate(DOMAIN_NAMES):
        ax.bar([j + i * width for j in range(len(merges))], [r["retention"].get(d, 0) for r in merges], width, label=d)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(merges))], [r["model"] for r in merges], rotation=45)
    ax.set_ylabel("score / specialist's score")
    ax.set_title(f"{model}: per-domain retention")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "retention.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    costed = [r for r in merges if r["merge_seconds"] is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r["merge_seconds"] for r in costed], [r["np"] for r in costed])
    for r in costed:
        ax.annotate(r["model"], (r["merge_seconds"], r["np"]), fontsize=7)
    ax.set_xlabel("merge wall time (s, data passes included)")
    ax.set_ylabel("normalized performance")
    ax.set_title(f"{model}: performance versus merge cost")
    fig.tight_layout()
    paths.append(out_dir / "np_vs_cost.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
