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
@click.option("--model", "-m", required=True, help="base model family: tiny (the real families need the train image)")
@click.option("--domain", "-d", required=True, help="a domain, multitask, or all (five specialists + multitask)")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="family directory")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="recipe override, e.g. --set lr=1e-3")
def finetune_command(model: str, domain: str, out: Path, sets: tuple[str, ...]) -> None:
    """Finetune specialists from the base; for tiny, data, tokenizer and base are built first if missing."""
    import dataclasses

    from mergebench.catalog.models import get_model
    from mergebench.tiny.tasks import DOMAINS

    get_model(model)  # unknown names: one line listing the known ones
    if model != "tiny":
        raise MergeBenchError(f"finetune --model {model}: full-scale SFT (DeepSpeed ZeRO-3) runs in the train "
                              "image and is not in this release; --model tiny runs here")
    choices = DOMAINS + ("multitask", "all")
    if domain not in choices:
        raise MergeBenchError(f"unknown domain {domain!r}; known: {', '.join(choices)}")
    models = DOMAINS + ("multitask",) if domain == "all" else (domain,)
    cfg = family_config()
    overrides = parse_sets(sets, example="lr=1e-3")
    if overrides:  # one recipe for every specialist and the multi-task model, as in the paper
        cfg = dataclasses.replace(cfg, specialist_recipe=cfg.specialist_recipe.override(**overrides),
                                  multitask_recipe=cfg.multitask_recipe.override(**overrides))
    from mergebench.cli.tiny_cmd import run_build

    paths = run_build(out, ("base",) + models, cfg)
    click.echo(f"finetuned {', '.join(m for m in paths if m != 'base')} in {out}")
