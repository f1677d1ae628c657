"""`mergebench eval`: evaluate one or more models on the tiny suite or with a MergeBench harness."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

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
            records[model.name] = _run_harness(harness, model, out / model.name, console)
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
    Console().print(table)
    click.echo(json.dumps({label: str(out / label / "record.json") for label in records}))


def _run_harness(harness: str, model: Path, out: Path, console: Console):
    """Each of the harness's processes in turn (bigcode: generation then execution), logs kept."""
    from mergebench.evaluation.adapters import ADAPTERS

    adapter = ADAPTERS[harness]
    if not (model / "config.json").is_file():
        raise MergeBenchError(f"model {model}: not a model directory (no config.json)")
    out.mkdir(parents=True, exist_ok=True)
    for run in adapter.runs(str(model.resolve()), str(out.resolve())):
        Path(run.out_dir).mkdir(parents=True, exist_ok=True)
        log = out / f"{run.name}.log"
        console.print(f"{run.name}: {run.shell()}  (log: {log})")
        try:
            with open(log, "w") as fh:
                code = subprocess.run(list(run.argv), cwd=run.workdir, env={**os.environ, **run.env}, stdout=fh,
                                      stderr=subprocess.STDOUT).returncode
        except FileNotFoundError:
            raise MergeBenchError(f"{harness} for model {model.name}: {run.argv[0]!r} not found; run this inside the "
                                  f"{run.image} image (or install the harness)") from None
        if code != 0:
            raise MergeBenchError(f"{harness} run {run.name} for model {model.name} exited with code {code}; "
                                  f"its log: {log}")
    parsed = adapter.parse(str(out.resolve()), model.name)
    from mergebench.pipeline.kinds.eval import combine_records

    return combine_records(parsed if isinstance(parsed, list) else [parsed], model.name, harness)
