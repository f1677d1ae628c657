"""Tables that keep every name whole: on a terminal long cells wrap instead of ending in `…`; in a log
(not a terminal, where rich would assume 80 columns) the table is printed as wide as it needs."""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


def print_table(table: Table, stderr: bool = False, console: Console | None = None) -> None:
    console = console or Console(stderr=stderr)
    for column in table.columns:
        column.overflow = "fold"
    if console.is_terminal:
        console.print(table)
        return
    probe = Console(file=console.file, width=10_000)
    needed = Measurement.get(probe, probe.options, table).maximum
    Console(file=console.file, width=max(console.width, needed)).print(table)
