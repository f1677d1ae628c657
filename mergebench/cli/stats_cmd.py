"""`mergebench stats`: the statistics pass (Gram matrices, diagonal Fisher or trained masks) of one specialist."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mergebench.catalog.prompts import TEMPLATES
from mergebench.cli.options import parse_sets
from mergebench.cli.output import print_table


@click.command("stats")
@click.option("--kind", type=click.Choice(["gram", "fisher", "mask"]), required=True,
              help="which statistics to compute: gram (regmean), fisher, mask (localize_stitch masks=trained)")
@click.option("--model", "model", required=True, help="the specialist: directory or hub id in the local HF cache")
@click.option("--base", help="mask: the base model (directory or hub id in the local HF cache)")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE",
              help="mask training setting (reference defaults): sparsity=0.1, sigmoid_bias=3, lr=1e8, epochs=1, "
                   "l1=0, threshold_set=reference")
@click.option("--data", required=True,
              help="a domain (its MergeBench/<domain>_val set), a JSONL file, a directory of <domain>.jsonl "
                   "files, or `mergebench` (the hub set paired with the specialist's domain by --compat)")
@click.option("--samples", type=int, default=1000, show_default=True, help="number of samples")
@click.option("--out", required=True, help="output statistics directory")
@click.option("--domain", help="the specialist's domain (default: from the model name's _<domain> suffix)")
@click.option("--compat", type=click.Choice(["default", "reference"]), default="default", show_default=True,
              help="reference: pair specialists with the reference code's (mismatched) domains (gram, fisher; "
                   "the reference trains masks on each specialist's own domain)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the sample selection")
@click.option("--max-length", type=int, default=2048, show_default=True, help="truncate samples to this many tokens")
@click.option("--batch-size", type=int, default=8, show_default=True, help="samples per forward pass (gram, mask)")
@click.option("--tokenizer", help="tokenizer directory (default: the model's; for mask the base's)")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:N")
@click.option("--force", is_flag=True, help="replace an existing output directory")
@click.option("--template", type=click.Choice(TEMPLATES), default="alpaca", show_default=True,
              help="prompt template the specialist was finetuned with (the tiny family: alpaca-short)")
def stats_command(kind, model, base, sets, data, samples, out, domain, compat, seed, max_length, batch_size, tokenizer,
                  device, force, template):
    """Compute Gram matrices (RegMean), the diagonal Fisher, or trained Localize-and-Stitch masks (with
    --base) of one specialist on validation data."""
    from mergebench.merging.datapass.stats import StatsJob, compute_stats
    from mergebench.merging.pairing import compat_for_stats, resolve_data

    source, data_domain = resolve_data(data, model, domain, compat_for_stats(kind, compat))
    job = StatsJob(kind, model, source, samples, out, seed=seed, domain=data_domain if Path(source).is_dir() else None,
                   max_length=max_length, batch_size=batch_size, device=device, tokenizer=tokenizer, force=force,
                   template=template, base=base, settings=parse_sets(sets, "lr=1e8"))
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task(f"{kind} {'batches' if kind == 'mask' else 'samples'}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = compute_stats(job, progress)
    table = Table(title=f"{kind} statistics", show_header=False)
    table.add_row("output", str(result.out))
    table.add_row("data", f"{result.manifest['data']} ({result.manifest.get('domain') or 'no domain'})")
    table.add_row("samples / tokens", f"{result.samples} / {result.tokens}")
    if kind == "mask":
        m = result.manifest
        table.add_row("kept (initial → trained)", f"{m['kept_initial']} → {m['kept']} of {m['masked_entries']} "
                      f"({m['kept_fraction']:.2%}; {m['switched_on']} on, {m['switched_off']} off)")
    table.add_row("wall time", f"{result.seconds:.2f} s")
    print_table(table)
