"""`mergebench submit` and `mergebench status`: a plan as Slurm jobs, and where those jobs stand."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from mergebench.cli.output import print_table

DEFAULT_WORKSPACE = os.environ.get("MERGEBENCH_WORKSPACE", "workspace")
STYLE = {"COMPLETED": "green", "RUNNING": "cyan", "PENDING": "yellow", "FAILED": "bold red",
         "CANCELLED": "red", "TIMEOUT": "bold red", "OUT_OF_MEMORY": "bold red", "UNKNOWN": "dim"}


@click.command("submit")
@click.option("--model", default="tiny", show_default=True, help="tiny, a MergeBench base (e.g. llama-3.2-3b) or a FAMILY.yaml")
@click.option("--methods", multiple=True, help="restrict the merge suite (repeat)")
@click.option("--workspace", default=DEFAULT_WORKSPACE, show_default=True, type=click.Path(path_type=Path),
              help="on a file system shared by the login and compute nodes")
@click.option("--hpc-config", type=click.Path(path_type=Path),
              help="site config (default: $MERGEBENCH_HPC_CONFIG, else ./hpc.yaml, else built-in defaults)")
@click.option("--eval-limit", type=int, help="evaluate only the first N rows of each task (smoke runs)")
def submit_command(model, methods, workspace, hpc_config, eval_limit):
    """Submit every stage that is not complete as a Slurm job chained with afterok, then return."""
    from mergebench.pipeline.launch import submit_plan
    from mergebench.pipeline.plan import build_plan
    from mergebench.pipeline.workspace import Workspace
    from mergebench.runtimes.slurm import SlurmRuntime, jobs_path

    runtime = SlurmRuntime(hpc_config)
    plan = build_plan(model, list(methods) or None, image_id=runtime.image_id, eval_limit=eval_limit)
    ws = Workspace(workspace)
    result = submit_plan(plan, ws, runtime)
    console = Console(stderr=True)
    for name, job in result.submitted.items():
        console.print(f"[cyan]submitted[/] {name}: job {job}")
    for name, job in result.queued.items():
        console.print(f"[yellow]   queued[/] {name}: job {job} (already pending or running)")
    console.print(f"{len(result.submitted)} job(s) submitted, {len(result.queued)} already queued, "
                  f"{len(result.complete)} stage(s) complete; jobs: {jobs_path(ws.root)}; follow with "
                  f"`mergebench status --workspace {ws.root}`")


@click.command("status")
@click.option("--workspace", default=DEFAULT_WORKSPACE, show_default=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON")
def status_command(workspace, as_json):
    """Each submitted stage with its Slurm job id and state (squeue, else sacct, else the workspace)."""
    from dataclasses import asdict

    from mergebench.errors import MergeBenchError
    from mergebench.pipeline.workspace import Workspace
    from mergebench.runtimes.slurm import job_table, jobs_path

    ws = Workspace(workspace)
    if not jobs_path(ws.root).is_file():
        raise MergeBenchError(f"no Slurm submissions in workspace {ws.root} ({jobs_path(ws.root)} is missing); submit "
                              "with `mergebench submit --workspace DIR`")
    rows, warning = job_table(ws.root)
    if as_json:
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        table = Table(title=f"Slurm jobs in {ws.root}")
        for col in ("stage", "job", "state", "reason", "output", "log"):
            table.add_column(col, overflow="fold")
        for r in rows:
            style = STYLE.get(r.state, "")
            table.add_row(r.stage, r.job_id, f"[{style}]{r.state}[/]" if style else r.state, r.reason or "-",
                          "complete" if r.complete else "-", r.log)
        print_table(table)
    if warning:
        click.echo(f"warning: {warning}", err=True)


COMMANDS = [submit_command, status_command]
