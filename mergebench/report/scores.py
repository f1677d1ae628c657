"""Aggregation as in the paper: normalized performance against each domain's specialist.

NP(M) = mean over domains d of s_d(M) / s_d(specialist_d) (per-domain, the default), or the mean over
datasets of the same ratio per task (per-dataset). Forgetting is the share of the base model's score
on the held-out suite that a model keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mergebench.catalog import DOMAIN_NAMES
from mergebench.evaluation.records import ResultRecord

HELD_OUT = "general"


@dataclass
class ModelScores:
    label: str
    role: str  # base | specialist | multitask | merge
    domains: dict[str, float] = field(default_factory=dict)
    tasks: dict[str, float] = field(default_factory=dict)
    held_out: float | None = None
    cost: dict[str, Any] = field(default_factory=dict)  # merge seconds / peak memory

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "role": self.role, "domains": self.domains, "tasks": self.tasks,
                "held_out": self.held_out, "cost": self.cost}


def role_of(label: str) -> str:
    if label == "base":
        return "base"
    if label == "multitask":
        return "multitask"
    if label in DOMAIN_NAMES:
        return "specialist"
    return "merge"


def tiny_scores(label: str, record: ResultRecord) -> ModelScores:
    """Tiny suite: a domain's score is its generation task's accuracy; MC variants stay as tasks."""
    from mergebench.evaluation.tiny_suite import TASK_DOMAIN

    s = ModelScores(label, role_of(label))
    for task, metrics in record.metrics.items():
        s.tasks[task] = metrics["acc,none"] if "acc,none" in metrics else metrics.get("acc", float("nan"))
        if not task.endswith("_mc"):
            domain = TASK_DOMAIN[task]
            if domain == HELD_OUT:
                s.held_out = s.tasks[task]
            else:
                s.domains[domain] = s.tasks[task]
    return s


def harness_scores(label: str, records: list[ResultRecord]) -> ModelScores:
    from mergebench.evaluation.scores import summarize

    summary = summarize(records)
    return ModelScores(label, role_of(label), dict(summary.domains), dict(summary.tasks))


def normalized_performance(model: ModelScores, specialists: dict[str, ModelScores], per: str = "domain") -> float | None:
    ratios = []
    if per == "domain":
        for d, spec in specialists.items():
            if d in model.domains and spec.domains.get(d):
                ratios.append(model.domains[d] / spec.domains[d])
        complete = len(ratios) == len(specialists)
    else:
        from mergebench.catalog import get_domain
        from mergebench.evaluation.tiny_suite import TASK_DOMAIN

        for d, spec in specialists.items():
            tasks = [t for t in spec.tasks if TASK_DOMAIN.get(t) == d] or \
                    [t.name for t in get_domain(d).tasks if t.name in spec.tasks]
            for t in tasks:
                if t in model.tasks and spec.tasks.get(t):
                    ratios.append(model.tasks[t] / spec.tasks[t])
        complete = bool(ratios)
    return sum(ratios) / len(ratios) if ratios and complete else None


def retention(model: ModelScores, specialists: dict[str, ModelScores]) -> dict[str, float]:
    """Per domain: the share of the specialist's score the model keeps."""
    return {d: model.domains[d] / s.domains[d] for d, s in specialists.items()
            if d in model.domains and s.domains.get(d)}


def forgetting(model: ModelScores, base: ModelScores | None) -> float | None:
    """Share of the base model's held-out score kept (1.0 = nothing forgotten)."""
    if base is None or not base.held_out or model.held_out is None:
        return None
    return model.held_out / base.held_out
