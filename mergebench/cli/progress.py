"""What `mergebench reproduce` shows while it runs: stages done of the total, the running ones with their
elapsed time and last log line, failures, and an ETA.

On a terminal that is a rich live view, redrawn a few times a second, with every finished stage
printed above it. Anywhere else (a CI log, `nohup`, a Slurm output file) it is plain, complete lines:
one per event, each with the count and the elapsed time, plus a line per running stage every
`heartbeat_s` so that a long stage is seen to be alive. A line starts with the event, then the stage
name (`   running merge/ties`, `      done eval/base`): what scripts grep for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

STYLE = {"running": "cyan", "done": "green", "skipped": "dim", "failed": "bold red", "blocked": "yellow"}
FINISHED = ("done", "skipped", "failed", "blocked")


def clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def last_line(log: Path, limit: int = 4096) -> str:
    """The last non-empty line of a log, read from its end (logs of real runs grow to megabytes);
    carriage-return progress bars count by their latest state."""
    try:
        with open(log, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.split("\r")[-1].strip() for ln in tail.splitlines()]
    return next((ln for ln in reversed(lines) if ln), "")


@dataclass
class RunProgress:
    """Counts and timings of one run, fed by the runner's status callbacks and ticks."""

    total: int
    log_of: Callable[[str], Path]  # stage name -> its log file
    console: Console = field(default_factory=lambda: Console(stderr=True))
    heartbeat_s: float = 60.0
    started: float = field(default_factory=time.time)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISHED, 0))
    running: dict[str, float] = field(default_factory=dict)  # stage -> when it started
    first_start: float | None = None
    failures: list[str] = field(default_factory=list)
    _live: Live | None = None
    _beat: float = field(default_factory=time.time)  # the first heartbeat comes heartbeat_s after the start

    # -- the runner's callbacks --
    def status(self, name: str, status: str) -> None:
        now = time.time()
        took = ""
        if status == "running":
            self.running[name] = now
            self.first_start = self.first_start or now
        else:  # one of FINISHED
            began = self.running.pop(name, None)
            self.counts[status] += 1
            if status == "failed":
                self.failures.append(name)
            if status in ("done", "failed") and began is not None:
                took = f" in {clock(now - began)}"
        self.console.print(f"[{STYLE.get(status, '')}]{status:>8}[/] {name}{took}  [dim]{self._counter()}[/]",
                           highlight=False)

    def tick(self) -> None:
        if self._live is not None:
            self._live.update(self.render())
            return
        now = time.time()
        if self.running and now - self._beat >= self.heartbeat_s:
            self._beat = now
            for name, began in sorted(self.running.items(), key=lambda item: item[1]):
                line = last_line(self.log_of(name)) or "(no output yet)"
                self.console.print(f" working {name} for {clock(now - began)}: {escape(line)}", highlight=False,
                                   soft_wrap=True)

    # -- the view --
    @property
    def finished(self) -> int:
        return sum(self.counts.values())

    def eta(self, now: float | None = None) -> float | None:
        """The stages left at the pace the run has kept since its first stage started (stages that
        run side by side, or share a process, count as they finish): an estimate, None until one ran."""
        if not self.counts["done"] or self.first_start is None:
            return None
        pace = ((now or time.time()) - self.first_start) / self.counts["done"]
        return pace * (self.total - self.finished)

    def _counter(self) -> str:
        eta = self.eta()
        return (f"[{self.finished}/{self.total}, {clock(time.time() - self.started)} elapsed"
                + (f", ETA {clock(eta)}" if eta is not None and self.finished < self.total else "") + "]")

    def render(self) -> Group:
        now = time.time()
        head = Text.assemble((f"{self.finished}/{self.total} stages", "bold"),
                             f"  ({self.counts['done']} run, {self.counts['skipped']} already complete"
                             + (f", {self.counts['failed']} failed" if self.counts["failed"] else "")
                             + (f", {self.counts['blocked']} blocked" if self.counts["blocked"] else "")
                             + f")  {self._counter()}")
        table = Table(show_header=True, header_style="dim", box=None, expand=True)
        table.add_column("running", no_wrap=True, overflow="fold")
        table.add_column("for", justify="right", no_wrap=True)
        table.add_column("last log line", overflow="ellipsis", no_wrap=True, ratio=1)
        for name, began in sorted(self.running.items(), key=lambda item: item[1]):
            table.add_row(Text(name), clock(now - began), Text(last_line(self.log_of(name))))
        parts = [head, table] if self.running else [head]
        if self.failures:
            parts.append(Text("failed: " + ", ".join(self.failures), style="bold red"))
        return Group(*parts)

    def __enter__(self) -> RunProgress:
        if self.console.is_terminal:
            self._live = Live(self.render(), console=self.console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None
