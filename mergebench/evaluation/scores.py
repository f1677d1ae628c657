"""Domain scores from result records: s_d = mean over the domain's tasks of each task's chosen variant.

Every task score is oriented higher-is-better (a harm rate h counts as 1 - h), so domain scores and
normalized performance can be averaged and compared without sign bookkeeping. Scores are fractions
in [0, 1], like the metrics they come from. Which variant counts is the catalog's default unless the
caller maps a task to another one, because the paper never said which it used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mergebench.catalog import DOMAIN_NAMES, get_domain, get_task
from mergebench.errors import MergeBenchError
from mergebench.evaluation.records import ResultRecord


class ScoreError(MergeBenchError, LookupError):
    """A score that cannot be computed: a needed task or metric is missing, or reported twice."""


def resolve_variants(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variant of every scored task: catalog defaults, replaced by `overrides` (checked, not trusted)."""
    overrides = dict(overrides or {})
    for task, variant in overrides.items():
        get_task(task).variant_components(variant)
    chosen = {}
    for domain in DOMAIN_NAMES:
        for task in get_domain(domain).tasks:
            chosen[task.name] = overrides.get(task.name, task.default_variant)
    return chosen


def _task_metrics(records: Iterable[ResultRecord], task: str) -> tuple[ResultRecord, dict[str, float]]:
    found = [record for record in records if task in record.metrics]
    if not found:
        raise ScoreError(f"no result for task {task!r}: none of the imported files reports it")
    if len(found) > 1:
        sources = "; ".join(", ".join(r.sources) or r.harness for r in found)
        raise ScoreError(f"task {task!r} is reported more than once ({sources}); score one run at a time")
    return found[0], found[0].metrics[task]


def task_score(records: Iterable[ResultRecord], task: str, variant: str | None = None) -> float:
    """One task's score under `variant` (default: the catalog's), oriented higher-is-better."""
    spec = get_task(task)
    components = spec.variant_components(variant)
    record, values = _task_metrics(list(records), task)
    oriented = []
    for key, metric in components:
        if key not in values:
            where = ", ".join(record.sources) or record.harness
            raise ScoreError(
                f"task {task!r} has no metric {key!r} in {where} (recorded: {', '.join(values)})"
            )
        value = values[key]
        oriented.append(1.0 - value if metric.lower_is_better else value)
    return sum(oriented) / len(oriented)


def domain_score(
    records: Iterable[ResultRecord], domain: str, variants: Mapping[str, str] | None = None
) -> float:
    """The domain's score: the unweighted mean of its tasks' scores."""
    records = list(records)
    chosen = resolve_variants(variants)
    tasks = get_domain(domain).tasks
    return sum(task_score(records, t.name, chosen[t.name]) for t in tasks) / len(tasks)


def domain_scores(
    records: Iterable[ResultRecord],
    variants: Mapping[str, str] | None = None,
    domains: Iterable[str] = DOMAIN_NAMES,
) -> dict[str, float]:
    """Scores of `domains` (default: all five); raises ScoreError if any needed metric is missing."""
    records = list(records)
    return {domain: domain_score(records, domain, variants) for domain in domains}


@dataclass
class ScoreSummary:
    """Everything the records can say about domains: the scores that exist and why the others do not."""

    domains: dict[str, float] = field(default_factory=dict)
    tasks: dict[str, float] = field(default_factory=dict)
    variants: dict[str, str] = field(default_factory=dict)
    incomplete: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "domains": self.domains,
            "tasks": self.tasks,
            "variants": self.variants,
            "incomplete": self.incomplete,
        }


def summarize(records: Iterable[ResultRecord], variants: Mapping[str, str] | None = None) -> ScoreSummary:
    """Score every domain the records cover fully; note the reason for each one they do not.

    A folder with only some harness outputs is normal (the safety run may still be going), so missing
    results make a domain incomplete instead of failing. A bad variant name still fails.
    """
    records = list(records)
    summary = ScoreSummary(variants=resolve_variants(variants))
    for domain in DOMAIN_NAMES:
        task_scores = {}
        try:
            for task in get_domain(domain).tasks:
                task_scores[task.name] = task_score(records, task.name, summary.variants[task.name])
        except ScoreError as error:
            summary.incomplete[domain] = str(error)
        summary.tasks.update(task_scores)
        if domain not in summary.incomplete:
            summary.domains[domain] = sum(task_scores.values()) / len(task_scores)
    return summary
