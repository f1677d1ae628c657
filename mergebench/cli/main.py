"""The `mergebench` command: a thin click layer over the parts; no tensor math or harness formats here."""

from __future__ import annotations

import sys

import click

from mergebench import __version__
from mergebench.cli.merge_cmd import merge_command, methods_command
from mergebench.errors import MergeBenchError


class KitGroup(click.Group):
    """Turns a MergeBenchError anywhere below into `error: <one line>` and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MergeBenchError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)


@click.group(cls=KitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mergebench")
def main() -> None:
    """mergebench-kit: merge, evaluate and report MergeBench, reproducibly."""


main.add_command(merge_command)
main.add_command(methods_command)


@main.command("reproduce")
@click.option("--model", default="tiny", show_default=True, help="base model family (see SPEC) or tiny")
def reproduce_command(model: str) -> None:
    """Run fetch → merge → eval → report for one base model (the pipeline is not in this release yet)."""
    raise MergeBenchError(
        f"reproduce --model {model}: the end-to-end pipeline (fetch, merge, eval, report) is not in this "
        "release yet; what works today is `mergebench merge` and `mergebench results import` (see README)"
    )

try:  # the results commands need only the standard library and click
    from mergebench.cli.results_cmd import results

    main.add_command(results)
except ImportError:  # pragma: no cover - during partial installs
    pass

if __name__ == "__main__":
    main()
