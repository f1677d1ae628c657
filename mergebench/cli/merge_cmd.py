"""`mergebench merge` and `mergebench methods`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mergebench.cli.options import parse_sets
from mergebench.cli.output import print_table
from mergebench.errors import MergeBenchError

CONFIG_KEYS = {"method", "base", "experts", "labels", "out", "settings", "include", "exclude", "out_dtype",
               "max_shard_size", "device", "stats", "data", "compat"}


def _load_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise MergeBenchError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise MergeBenchError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise MergeBenchError(f"{path}: expected a mapping with method, base, experts, out")
    unknown = set(data) - CONFIG_KEYS
    if unknown:
        raise MergeBenchError(f"{path}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(CONFIG_KEYS))})")
    experts = data.get("experts") or []
    if experts and isinstance(experts[0], dict):  # [{path: ..., label: ...}]
        data["labels"] = [e.get("label") or Path(e["path"]).name for e in experts]
        data["experts"] = [e["path"] for e in experts]
    return data


@click.command("merge")
@click.argument("config", required=False, type=click.Path(path_type=Path))
@click.option("--method", "-m", help="merging method (see `mergebench methods`)")
@click.option("--base", "-b", help="base model: directory or hub id in the local HF cache")
@click.option("--expert", "-e", "experts", multiple=True, help="a specialist (repeat once per specialist)")
@click.option("--label", "labels", multiple=True, help="names of the specialists, in --expert order")
@click.option("--stats", "stats", multiple=True,
              help="statistics directory of a specialist (regmean, fisher, localize_stitch masks=trained; from "
                   "`mergebench stats`), in --expert order")
@click.option("--data", "data_sources", multiple=True,
              help="regmean_pp: validation data per --expert (a domain or JSONL file), or once for all "
                   "(`mergebench` or a directory of <domain>.jsonl files, paired by --compat)")
@click.option("--compat", type=click.Choice(["default", "reference"]),
              help="reference: the reference code's behaviour where it differs: specialists paired with its data "
                   "domains, Localize-and-Stitch's in-place base and overlap rule (default: correct)")
@click.option("--out", "-o", help="output directory")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="method setting, e.g. --set K=0.3")
@click.option("--include", multiple=True, help="glob of tensors to merge (replaces the default set)")
@click.option("--exclude", multiple=True, help="glob of tensors to keep from the base")
@click.option("--out-dtype", help="output dtype (default: the base's): bfloat16, float16, float32")
@click.option("--max-shard-size", help="largest output shard, e.g. 5GB (default 5GB)")
@click.option("--device", help="auto (CUDA when present), cpu, cuda, cuda:N")
@click.option("--force", is_flag=True, help="replace an existing output directory")
@click.option("--full-hash", is_flag=True, help="hash every byte of the inputs for the manifest")
def merge_command(config, method, base, experts, labels, stats, data_sources, compat, out, sets, include, exclude, out_dtype,
                  max_shard_size, device, force, full_hash):
    """Merge a base and its specialists into one checkpoint, streaming tensor by tensor.

    Give everything as options, or a YAML CONFIG with the same keys (method, base, experts, out,
    settings, include, exclude, out_dtype, max_shard_size, device, stats, data, compat); options override
    the file.
    """
    from mergebench.merging.run import MergeJob, make_merger

    data = _load_config(config) if config else {}
    cli = {"method": method, "base": base, "out": out, "out_dtype": out_dtype, "max_shard_size": max_shard_size,
           "device": device, "experts": list(experts) or None, "labels": list(labels) or None,
           "stats": list(stats) or None, "data": list(data_sources) or None, "compat": compat,
           "include": list(include) or None, "exclude": list(exclude) or None}
    data.update({k: v for k, v in cli.items() if v is not None})
    data["settings"] = {**(data.get("settings") or {}), **parse_sets(sets)}
    for key, flag in (("method", "--method"), ("base", "--base"), ("out", "--out")):
        if not data.get(key):
            raise MergeBenchError(f"missing {key}: give {flag} or set {key} in the config file")
    data.setdefault("max_shard_size", "5GB")
    data.setdefault("device", "auto")
    job = MergeJob(**{k: v for k, v in data.items() if v is not None}, force=force, full_hash=full_hash)

    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        tasks: dict[str, Any] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        merger = make_merger(job, progress)
        result = merger.run()
    table = Table(title=f"merged with {merger.spec.name}", show_header=False)
    table.add_row("output", str(result.out))
    table.add_row("tensors merged / copied", f"{result.tensors_merged} / {result.tensors_copied}")
    table.add_row("wall time", f"{result.seconds:.2f} s")
    table.add_row("peak RSS", f"{result.peak_rss_bytes / 2**20:.0f} MiB")
    if result.peak_cuda_bytes:
        table.add_row("peak CUDA memory", f"{result.peak_cuda_bytes / 2**20:.0f} MiB")
    if result.thresholds is not None:
        table.add_row("global thresholds", ", ".join(f"{t:.4g}" for t in result.thresholds))
    print_table(table)


@click.command("methods")
def methods_command():
    """List the merging methods with their settings and reference defaults."""
    from mergebench.merging.methods import METHODS, all_methods

    table = Table(title="merging methods (built in, then installed plug-ins)")
    table.add_column("method", style="bold")
    table.add_column("what it does")
    table.add_column("settings (default)")
    for key, spec in all_methods().items():
        settings = "\n".join(
            f"{p.name} = {p.default!r}" + (f"  [{'|'.join(p.choices)}]" if p.choices else "") + f"  {p.help}"
            for p in spec.params
        ) or "-"
        name = spec.name if key in METHODS else f"{key} (plug-in)"
        table.add_row(name, f"{spec.summary}\n({spec.reference})", settings)
    print_table(table)
