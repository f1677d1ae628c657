"""The `mergebench` command: a thin click layer over the parts; no tensor math or harness formats here."""

from __future__ import annotations

import sys

import click

from mergebench import __version__
from mergebench.cli.convert_cmd import convert_group
from mergebench.cli.eval_cmd import eval_command
from mergebench.cli.hpc_cmd import COMMANDS as HPC_COMMANDS
from mergebench.cli.merge_cmd import merge_command, methods_command
from mergebench.cli.pipeline_cmd import plan_command, reproduce_command, stage_group
from mergebench.cli.rehearse_cmd import rehearse_command
from mergebench.cli.results_cmd import results
from mergebench.cli.stats_cmd import stats_command
from mergebench.cli.tiny_cmd import COMMANDS as TINY_COMMANDS
from mergebench.errors import MergeBenchError


class KitGroup(click.Group):
    """Turns a MergeBenchError (or an OSError: disk full) anywhere below into `error: <one line>`, exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MergeBenchError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except OSError as e:  # a full disk, a vanished mount: the file and the cause, not a traceback
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"error: {where}{e.strerror or e} (errno {e.errno}); nothing was written", err=True)
            sys.exit(1)


@click.group(cls=KitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mergebench")
def main() -> None:
    """mergebench-kit: merge, evaluate and report MergeBench, reproducibly."""


for command in (merge_command, methods_command, stats_command, eval_command, *TINY_COMMANDS, plan_command, reproduce_command,
                stage_group, *HPC_COMMANDS, results, convert_group, rehearse_command):
    main.add_command(command)

if __name__ == "__main__":
    main()
