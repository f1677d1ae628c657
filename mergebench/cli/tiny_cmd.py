"""`mergebench tiny build` and `mergebench tiny score`: the CPU-sized family, built and checked."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mergebench.cli.output import print_table
from mergebench.errors import MergeBenchError


def quiet_transformers() -> None:
    """transformers' own tqdm bars (loading, writing shards) would tear through the rich display."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def family_progress() -> Progress:
    return Progress(TextColumn("{task.description:<13}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("steps"), TimeElapsedColumn(), console=Console(stderr=True))


def run_build(out: Path, models: tuple[str, ...] | None = None, cfg=None, workers: int = 2) -> dict[str, Path]:
    """Build (part of) the family with one progress bar per model; shared by `tiny build` and `finetune`."""
    from mergebench.tiny.build import MODELS, FamilyConfig, build_family

    models = models or MODELS
    quiet_transformers()
    with family_progress() as bar:
        tasks: dict[str, int] = {}

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        return build_family(out, cfg or FamilyConfig(), models=models, progress=progress, workers=workers)


@click.group("tiny")
def tiny() -> None:
    """The tiny model family: a CPU-sized MergeBench (tokenizer, base, five specialists, multi-task)."""


@tiny.command("build")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="family directory")
@click.option("--seed", default=0, show_default=True, type=int, help="seed of data, tokenizer and training")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 16),
              help="finetunes run at once (one CPU thread each); the output does not depend on it")
def build_command(out: Path, seed: int, workers: int) -> None:
    """Build the whole family into OUT (about a minute on two idle cores); a rerun skips what is complete."""
    from mergebench.tiny.build import FamilyConfig

    start = time.perf_counter()
    paths = run_build(out, cfg=FamilyConfig(seed=seed), workers=workers)
    click.echo(f"tiny family in {out}: {', '.join(paths)} ({time.perf_counter() - start:.1f}s)")


@tiny.command("score")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--data", "data", required=True, type=click.Path(path_type=Path),
              help="the family's data directory (FAMILY/data)")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "validation", "test"]))
@click.option("--limit", type=click.IntRange(1), help="score only the first N rows of each domain")
def score_command(models: tuple[Path, ...], data: Path, split: str, limit: int | None) -> None:
    """Greedy accuracy of each model directory on every tiny domain and the general suite."""
    from mergebench.tiny.score import score_model
    from mergebench.tiny.tasks import DOMAINS, GENERAL

    if not (data / GENERAL / f"{split}.jsonl").is_file():
        raise MergeBenchError(f"{data}: no {GENERAL}/{split}.jsonl; pass the data/ folder of a tiny family")
    quiet_transformers()
    table = Table("model", *DOMAINS, GENERAL, title=f"greedy accuracy on {split}")
    names = [m.name for m in models]
    for m in models:
        scores = score_model(m, data, split=split, limit=limit)
        label = m.name if names.count(m.name) == 1 else str(m)
        table.add_row(label, *(f"{scores[d]:.2f}" for d in DOMAINS + (GENERAL,)))
    print_table(table)


def _commands() -> tuple[click.Command, ...]:
    from mergebench.cli.finetune_cmd import finetune_command

    return (tiny, finetune_command)


#: What mergebench.cli.main registers: the tiny group and the top-level finetune command.
COMMANDS = _commands()
