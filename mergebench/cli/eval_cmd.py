"""`mergebench eval`: evaluate one or more models on the tiny suite or with a MergeBench harness."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from mergebench.cli.output import print_table
from mergebench.errors import MergeBenchError


@click.command("eval")
@click.option("--model", "models", multiple=True, required=True, type=click.Path(path_type=Path),
              help="model directory (repeat for several: one process evaluates them all)")
@click.option("--suite", type=click.Choice(["tiny", "mergebench"]), required=True)
@click.option("--harness", type=click.Choice(["lmeval", "bigcode", "safety"]),
              help="mergebench suite: which harness (it must be installed where this runs, e.g. its image)")
@click.option("--data", type=click.Path(path_type=Path), help="tiny suite: the family's data folder (FAMILY/data)")
@click.option("--limit", type=int, help="evaluate only the first N rows of each task (smoke runs)")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="output folder")
def eval_command(models, suite, harness, data, limit, out):
    """Run the evaluation, write each model's raw harness output and unified record, print a table."""
    from mergebench.evaluation.store import write_document

    console = Console(stderr=True)
    records = {}
    if suite == "tiny":
        from mergebench.evaluation.tiny_eval import evaluate_tiny

        if data is None:
            raise MergeBenchError("--suite tiny needs --data FAMILY/data (the tiny family's JSONL sets)")
        labels = {m.name: m for m in models}
        records = evaluate_tiny(labels, data, out, limit=limit,
                                progress=lambda label, i, n, s: console.print(f"[{i}/{n}] {label}: {s:.1f} s"))
    else:
        if harness is None:
            raise MergeBenchError("--suite mergebench needs --harness lmeval, bigcode or safety")
        for model in models:
            records[model.name] = _run_harness(harness, model, out / model.name, console, limit)
    for label, record in records.items():
        write_document(out / label / "record.json", record.to_dict())
    table = Table(title=f"{suite} evaluation")
    table.add_column("model")
    table.add_column("task")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, record in records.items():
        for task, metrics in record.metrics.items():
            for metric, value in metrics.items():
                table.add_row(label, task, metric, f"{value:.4f}")
    print_table(table)
    click.echo(json.dumps({label: str(out / label / "record.json") for label in records}))


def _run_harness(harness: str, model: Path, out: Path, console: Console, limit: int | None = None):
    """Each of the harness's processes in turn (bigcode: generation then execution), logs kept."""
    import dataclasses

    from mergebench.evaluation.adapters import ADAPTERS, SETTINGS
    from mergebench.evaluation.adapters.execute import parse_record, run_processes

    adapter = ADAPTERS[harness]
    if not (model / "config.json").is_file():
        raise MergeBenchError(f"model {model}: not a model directory (no config.json)")
    kwargs = {}
    if limit is not None:  # a smoke run must be one: the harness itself evaluates only `limit` rows
        settings = SETTINGS[harness]()
        if not hasattr(settings, "limit"):
            raise MergeBenchError("--limit: safety-eval has no row limit; run it whole, or smoke-test lmeval "
                                  "or bigcode")
        kwargs["settings"] = dataclasses.replace(settings, limit=limit)
    out = out.resolve()
    run_processes(adapter.runs(str(model.resolve()), str(out), **kwargs), harness, model.name, out,
                  say=console.print)
    return parse_record(adapter, out, model.name, harness)
