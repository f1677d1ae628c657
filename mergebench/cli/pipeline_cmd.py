"""`mergebench plan`, `mergebench reproduce` and `mergebench stage run`: the pipeline from the CLI."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from mergebench.cli.options import comma_list
from mergebench.cli.output import print_table
from mergebench.errors import MergeBenchError

DEFAULT_WORKSPACE = os.environ.get("MERGEBENCH_WORKSPACE", "workspace")


def _gpus(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        return [int(g) for g in text.split(",") if g.strip()]
    except ValueError:
        raise MergeBenchError(f"--gpus {text!r}: expected GPU indices such as 0,1,2") from None


def scope_options(command):
    """--harnesses/--tasks/--eval-models/--device/--gen-kwargs: a slice of a hub family's evaluations."""
    for option in reversed([
        click.option("--harnesses", help="hub families: evaluate with only these harnesses (lmeval,bigcode,safety)"),
        click.option("--tasks", help="hub families: only these tasks, e.g. gsm8k_cot,ifeval,arc_fr,humanevalplus"),
        click.option("--eval-models", help="hub families: evaluate only these models, e.g. base,math,merge:ties"),
        click.option("--device", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True,
                     help="hub families: cpu runs every stage without a GPU (rehearsals; not safety-eval)"),
        click.option("--gen-kwargs", help="hub families: lm-eval --gen_kwargs override (short smoke runs only)"),
    ]):
        command = option(command)
    return command


def _scope(harnesses=None, tasks=None, eval_models=None, device="gpu", gen_kwargs=None):
    from mergebench.pipeline.plan import HARNESSES, EvalScope

    return EvalScope(comma_list(harnesses) or HARNESSES, comma_list(tasks), comma_list(eval_models), None, device,
                     gen_kwargs)


def _build(model: str, methods: tuple[str, ...], runtime_name: str, eval_limit: int | None = None, scope=None):
    from mergebench.pipeline.plan import build_plan
    from mergebench.runtimes import get_runtime

    runtime = get_runtime(runtime_name)
    plan = build_plan(model, list(methods) or None, image_id=runtime.image_id, eval_limit=eval_limit, scope=scope)
    return plan, runtime


def _default_runtime(model: str) -> str:
    return "local" if model == "tiny" else "docker"


@click.command("plan")
@click.option("--model", default="tiny", show_default=True, help="tiny, a MergeBench base (e.g. llama-3.2-3b) or a FAMILY.yaml")
@click.option("--methods", multiple=True, help="restrict the merge suite (repeat)")
@click.option("--runtime", type=click.Choice(["local", "docker", "apptainer", "slurm"]), help="default: local for tiny, else docker")
@click.option("--workspace", default=DEFAULT_WORKSPACE, show_default=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the plan as JSON")
@click.option("--eval-limit", type=int, help="evaluate only the first N rows of each task (smoke runs)")
@scope_options
def plan_command(model, methods, runtime, workspace, as_json, eval_limit, **scope):
    """Print the stage DAG with each stage's key, image, GPU need and status, and what each fetch stage brings."""
    from mergebench.pipeline.workspace import Workspace

    plan, _ = _build(model, methods, runtime or _default_runtime(model), eval_limit, _scope(**scope))
    ws = Workspace(workspace)
    if as_json:
        click.echo(json.dumps([{**s.to_dict(), "done": ws.is_complete(s)} for s in plan.stages], indent=2))
        return
    table = Table(title=f"plan for {plan.model} ({len(plan.stages)} stages)")
    for col in ("stage", "kind", "key", "image", "GPUs", "reads", "status"):
        table.add_column(col)
    for s in plan.stages:
        done = ws.is_complete(s)
        reads = list(s.inputs.values())
        reads_text = ", ".join(reads) if len(reads) <= 3 else f"{len(reads)} stages"
        table.add_row(s.name, s.kind, s.key[:12], s.image, str(s.gpus), reads_text or "-",
                      "[green]done[/]" if done else "to run")
    print_table(table)
    for line in brought_lines(plan.stages):
        click.echo(line)


def brought_lines(stages) -> list[str]:
    """What each fetch stage brings into the workspace, one line per stage (after it, nothing is fetched)."""
    lines = []
    for s in stages:
        if s.kind == "fetch_tasks":
            things = [*s.params.get("datasets", []), *[f"nltk {n}" for n in s.params.get("nltk", [])],
                      *[f"judge {m}" for m in s.params.get("models", [])]]
            lines.append(f"{s.name} ({s.image} image) brings: {', '.join(things)}")
        elif s.kind == "fetch":
            models = [f"{role} {src}" for role, src in s.params["models"].items()]
            lines.append(f"{s.name} brings: {', '.join(models + s.params.get('datasets', []))}")
    return lines


@click.command("reproduce")
@click.option("--model", default="tiny", show_default=True, help="tiny, a MergeBench base (e.g. llama-3.2-3b) or a FAMILY.yaml")
@click.option("--methods", multiple=True, help="restrict the merge suite (repeat)")
@click.option("--runtime", type=click.Choice(["local", "docker", "apptainer", "slurm"]), help="default: local for tiny, else docker")
@click.option("--gpus", help="GPU indices to schedule onto, e.g. 0,1 (default: none)")
@click.option("--workspace", default=DEFAULT_WORKSPACE, show_default=True, type=click.Path(path_type=Path))
@click.option("--results", "results_dir", default="results", show_default=True, type=click.Path(path_type=Path),
              help="where results/<model>/report.md is published")
@click.option("--force", multiple=True, help="recompute a stage (name or kind) and what depends on it")
@click.option("--jobs", default=min(4, os.cpu_count() or 1), show_default=True,
              help="CPU stages run at once (each gets cores/jobs threads)")
@click.option("--eval-limit", type=int, help="evaluate only the first N rows of each task (smoke runs)")
@scope_options
def reproduce_command(model, methods, runtime, gpus, workspace, results_dir, force, jobs, eval_limit, **scope):
    """Run fetch → [stats] → merge → eval → report for one family, resuming completed stages."""
    from mergebench.cli.progress import RunProgress, clock
    from mergebench.pipeline.runner import Runner
    from mergebench.pipeline.workspace import Workspace

    plan, rt = _build(model, methods, runtime or _default_runtime(model), eval_limit, _scope(**scope))
    ws = Workspace(workspace)
    console = Console(stderr=True)
    progress = RunProgress(len(plan.stages), lambda name: ws.log(plan.by_name[name]), console)
    runner = Runner(plan, ws, rt, gpus=_gpus(gpus), max_cpu_jobs=jobs, on_status=progress.status,
                    on_tick=progress.tick)
    with progress:
        summary = runner.run(force=list(force))
    if summary.failed or summary.blocked:
        for name in summary.failed:
            console.print(f"[bold red]failed[/] {name}: log {summary.logs[name]}")
        if summary.blocked:
            console.print(f"[yellow]not run[/] because an input failed: {', '.join(summary.blocked)}")
        raise MergeBenchError(f"{len(summary.failed)} stage(s) failed; completed stages are kept and the next "
                              "run resumes from them")
    report = plan.by_name["report"]
    target = _publish(ws.output(report), results_dir / plan.model)
    console.print(f"{progress.counts['done']} stage(s) run, {progress.counts['skipped']} already complete in "
                  f"{clock(time.time() - progress.started)}; report: {target / 'report.md'}")
    from mergebench.report.render import rich_table

    rows = json.loads((target / "report.json").read_text())["rows"]
    print_table(rich_table(plan.model, rows))


def _publish(report_dir: Path, target: Path) -> Path:
    """Copy the report stage's files to results/<model>/ (replacing an older report)."""
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(report_dir, tmp, ignore=shutil.ignore_patterns("manifest.json"))
    shutil.copy2(report_dir / "manifest.json", tmp / "stage_manifest.json")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


@click.group("stage")
def stage_group():
    """Run single stages (what runtimes launch)."""


@stage_group.command("run")
@click.argument("specs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--own-logs", is_flag=True, help="append each stage's output to its own log in the workspace")
def stage_run(specs, own_logs):
    """Run stages from their spec files (written by the runner under <workspace>/runs/), one after another."""
    from mergebench.pipeline.execute import run_specs
    from mergebench.runtimes.lifeline import hold_from_env

    hold_from_env()  # launched by a runner: die with it
    sys.exit(run_specs(specs, own_logs))
