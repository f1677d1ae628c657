"""`mergebench results`: turn raw harness outputs into the kit's unified results file, and show them.

Importing validates everything before writing anything, so a malformed raw file never leaves a results
file behind that the report would later trust.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from mergebench.catalog import DOMAIN_NAMES, get_domain, get_task
from mergebench.cli.output import print_table
from mergebench.errors import MergeBenchError
from mergebench.evaluation.parsers import import_results
from mergebench.evaluation.records import ResultRecord
from mergebench.evaluation.scores import ScoreSummary, summarize
from mergebench.evaluation.store import RESULTS_FILENAME, results_document, write_document


def _parse_variants(pairs: tuple[str, ...]) -> dict[str, str]:
    variants = {}
    for pair in pairs:
        task, sep, variant = pair.partition("=")
        if not sep or not task or not variant:
            raise click.ClickException(f"--variant {pair!r} is not TASK=VARIANT")
        variants[task.strip()] = variant.strip()
    return variants


@click.group("results")
def results() -> None:
    """Import raw evaluation outputs and compute domain scores."""


@results.command("import")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--json", "as_json", is_flag=True, help="Print the unified results as JSON on stdout instead of tables."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Where to store the unified results [default: DIRECTORY/{RESULTS_FILENAME}].",
)
@click.option("--model", "label", help="Label of the evaluated model [default: the folder's name].")
@click.option(
    "--variant",
    "variant_pairs",
    multiple=True,
    metavar="TASK=VARIANT",
    help="Score TASK with another metric variant, e.g. gsm8k_cot=exact_match,strict-match (repeatable).",
)
def import_command(
    directory: Path, as_json: bool, out: Path | None, label: str | None, variant_pairs: tuple[str, ...]
) -> None:
    """Parse lm_eval.json / results_*.json, code_eval.json and safety_eval.json found in DIRECTORY."""
    variants = _parse_variants(variant_pairs)
    try:
        records = import_results(directory, model=label)
        summary = summarize(records, variants)
    except MergeBenchError as error:
        raise click.ClickException(str(error)) from None
    document = results_document(records, summary)
    out = out if out is not None else directory / RESULTS_FILENAME
    try:
        write_document(out, document)
    except OSError as error:
        raise click.ClickException(f"{out}: cannot write results: {error.strerror or error}") from None

    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    console = Console()
    for record in records:
        print_table(_record_table(record), console=console)
    print_table(_score_table(summary), console=console)
    console.print(f"Wrote {out}")


def _record_table(record: ResultRecord) -> Table:
    version = " ".join(part for part in (record.harness_version, record.harness_commit) if part)
    details = ", ".join(part for part in (version, record.backend) if part)
    title = f"{record.model} · {record.harness}" + (f" ({details})" if details else "")
    table = Table(title=title, caption=", ".join(record.sources))
    table.add_column("task")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("± stderr", justify="right")
    for task, values in record.metrics.items():
        errors = record.stderr.get(task, {})
        for metric, value in values.items():
            stderr = errors.get(metric)
            table.add_row(task, metric, f"{value:.4f}", "" if stderr is None else f"{stderr:.4f}")
    return table


def _variant_label(task: str, variant: str) -> str:
    """How a task was scored, with lower-is-better metrics shown as "1 − metric"."""
    components = get_task(task).variant_components(variant)
    if len(components) == 1 and components[0][1].lower_is_better:
        return f"1 − {variant}"
    return variant


def _score_table(summary: ScoreSummary) -> Table:
    table = Table(title="Domain scores (mean of task scores, higher is better)")
    table.add_column("domain")
    table.add_column("score", justify="right")
    table.add_column("tasks by variant")
    for domain in DOMAIN_NAMES:
        if domain not in summary.domains:
            table.add_row(domain, "—", f"incomplete: {summary.incomplete[domain]}")
            continue
        by_variant: dict[str, list[str]] = {}
        for task in get_domain(domain).task_names:
            by_variant.setdefault(_variant_label(task, summary.variants[task]), []).append(task)
        used = "; ".join(f"{label}: {', '.join(tasks)}" for label, tasks in by_variant.items())
        table.add_row(domain, f"{summary.domains[domain]:.4f}", used)
    return table
