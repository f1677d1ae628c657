"""`mergebench rehearse`: the real path of a hub family on this machine (mergebench/rehearsal)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("rehearse")
@click.option("--workspace", default="workspace-rehearsal", show_default=True, type=click.Path(path_type=Path))
@click.option("--runtime", type=click.Choice(["local", "docker"]), default="local", show_default=True)
@click.option("--methods", default="task_arithmetic,ties,regmean", show_default=True, help="comma-separated")
@click.option("--eval-limit", default=2, show_default=True, help="rows per evaluation task")
@click.option("--tasks", help="only these tasks (default: every lm-eval and bigcode task of MergeBench)")
@click.option("--eval-models", help="evaluate only these models, e.g. base,math,merge:ties")
@click.option("--gen-kwargs", help="lm-eval --gen_kwargs override, e.g. max_gen_toks=32 (a faster slice)")
@click.option("--bigcode-source", type=click.Path(path_type=Path, file_okay=False),
              help="a clone of bigcode-evaluation-harness at its pinned commit (else no bigcode); with --runtime "
                   "docker, build the bigcode CPU image from it first (make rehearse does)")
@click.option("--steps", default=2, show_default=True, help="finetune steps per specialist")
@click.option("--jobs", default=2, show_default=True, help="CPU stages run at once")
@click.option("--results", default="results", show_default=True, type=click.Path(path_type=Path))
def rehearse_command(workspace, runtime, methods, eval_limit, tasks, eval_models, gen_kwargs, bigcode_source,
                     steps, jobs, results):
    """Run MergeBench's real path end to end here: SmolLM2-135M and few-step specialists, a hub double on
    127.0.0.1, then `reproduce` with the real harnesses on the CPU. The scores mean nothing."""
    from mergebench.cli.options import comma_list
    from mergebench.rehearsal.run import Rehearsal, rehearse

    r = Rehearsal(workspace, runtime, comma_list(methods) or (), eval_limit, comma_list(tasks), comma_list(eval_models),
                  gen_kwargs, bigcode_source, steps, jobs, results)
    sys.exit(rehearse(r, say=lambda text: click.echo(text, err=True)))
