"""`mergebench finetune`: specialists and the multi-task baseline, one recipe for every domain."""

from __future__ import annotations

from pathlib import Path

import click

from mergebench.cli.options import parse_sets
from mergebench.errors import MergeBenchError


def family_config():
    """The tiny family's configuration before --set overrides (a function, so tests can shrink it)."""
    from mergebench.tiny.build import FamilyConfig

    return FamilyConfig()


@click.command("finetune")
@click.option("--model", "-m", required=True, help="base model family: tiny, or a MergeBench base (llama-3.2-3b, ...)")
@click.option("--domain", "-d", required=True, help="a domain, multitask, or all (five specialists + multitask)")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="family directory (one model each)")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="recipe override, e.g. --set lr=1e-3")
@click.option("--deepspeed", is_flag=True, help="real families: DeepSpeed ZeRO-3 over this node's GPUs (torchrun)")
@click.option("--gpus", default=None, metavar="N|IDS",
              help="with --deepspeed: a GPU count or device ids 0,1,2,3 (default: every visible GPU)")
@click.option("--dry-run", is_flag=True, help="real families: print datasets, batch split, ZeRO-3 config and launch")
def finetune_command(model: str, domain: str, out: Path, sets: tuple[str, ...], deepspeed: bool, gpus: str | None,
                     dry_run: bool) -> None:
    """Finetune specialists from the base; for tiny, data, tokenizer and base are built first if missing.

    For a MergeBench base the recipe is the paper's (Recipe() defaults, overridable with --set), the data
    MergeBench's training sets read offline from the Hugging Face cache, and the base the hub model in that
    cache: one GPU (or the CPU) by default, every GPU of this node with --deepspeed.
    """
    import dataclasses

    from mergebench.catalog.models import get_model
    from mergebench.tiny.tasks import DOMAINS

    base = get_model(model)  # unknown names: one line listing the known ones
    choices = DOMAINS + ("multitask", "all")
    if domain not in choices:
        raise MergeBenchError(f"unknown domain {domain!r}; known: {', '.join(choices)}")
    models = DOMAINS + ("multitask",) if domain == "all" else (domain,)
    overrides = parse_sets(sets, example="lr=1e-3")
    if not base.local:
        return _real(base.hub_id, models, out, overrides, deepspeed, gpus, dry_run)
    if deepspeed or gpus or dry_run:
        raise MergeBenchError("--deepspeed, --gpus and --dry-run are for the MergeBench bases; the tiny family "
                              "trains on the CPU")
    cfg = family_config()
    if overrides:  # one recipe for every specialist and the multi-task model, as in the paper
        cfg = dataclasses.replace(cfg, specialist_recipe=cfg.specialist_recipe.override(**overrides),
                                  multitask_recipe=cfg.multitask_recipe.override(**overrides))
    from mergebench.cli.tiny_cmd import run_build

    paths = run_build(out, ("base",) + models, cfg)
    click.echo(f"finetuned {', '.join(m for m in paths if m != 'base')} in {out}")


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def _real(hub_id: str, models: tuple[str, ...], out: Path, overrides: dict, deepspeed: bool, gpus: str | None,
          dry_run: bool) -> None:
    import json
    import os
    import subprocess

    from mergebench.finetune.distributed import parse_gpus
    from mergebench.finetune.job import check_data, plan_launch, progress_printer, run_job
    from mergebench.finetune.recipe import Recipe
    from mergebench.finetune.trainer import is_complete
    from mergebench.merging.io.checkpoint import resolve_model_path

    recipe = Recipe().override(**overrides)
    if deepspeed:
        recipe = recipe.override(backend="deepspeed")
    if recipe.backend == "deepspeed":
        world, devices = parse_gpus(gpus, visible_gpus())
    elif gpus is not None:
        raise MergeBenchError("--gpus needs --deepspeed (the native backend trains on one device)")
    else:
        world, devices = 1, None
    try:
        model_dir = resolve_model_path(hub_id)
    except MergeBenchError:
        if not dry_run:
            raise
        model_dir = None  # a dry run shows the plan without the weights (ZeRO-3 buckets stay DeepSpeed's)
    launches = [plan_launch(hub_id, name, out / name, recipe, world, model_dir, devices) for name in models]
    if dry_run:
        click.echo(json.dumps([launch.describe() for launch in launches], indent=2))
        return
    for launch in launches:
        name = launch.job.name
        if is_complete(Path(launch.job.out)):
            click.echo(f"{name}: complete, skipped ({launch.job.out})")
            continue
        check_data(name, recipe)
        if launch.argv is None:
            result = run_job(launch.job, progress_printer(name, click.echo))
            click.echo(f"{name}: wrote {result.out} ({result.steps} steps)")
            continue
        launch.write()
        click.echo(f"{name}: {' '.join(launch.argv)}", err=True)
        code = subprocess.run(launch.argv, env={**os.environ, **launch.env}).returncode
        if code != 0:
            raise MergeBenchError(f"finetune {name}: the DeepSpeed launch exited with {code} (its output is above; "
                                  "a rerun resumes from the last checkpoint)")
        click.echo(f"{name}: wrote {launch.job.out}")
