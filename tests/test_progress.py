"""What `mergebench reproduce` shows while it runs (mergebench/cli/progress.py) and tables that keep
every name whole in a log (mergebench/cli/output.py)."""

from __future__ import annotations

import io
import re

from rich.console import Console
from rich.table import Table

from mergebench.cli.output import print_table
from mergebench.cli.progress import RunProgress, clock, last_line
from mergebench.pipeline.plan import build_plan


def _progress(tmp_path, terminal: bool, **kw) -> tuple[RunProgress, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=120, color_system=None)
    logs = {name: tmp_path / f"{name.replace('/', '_')}.log" for name in ("fetch", "merge/ties", "eval/base")}
    return RunProgress(3, logs.__getitem__, console, **kw), out


def test_plain_lines_count_time_and_estimate(tmp_path):
    progress, out = _progress(tmp_path, terminal=False, heartbeat_s=0)
    (tmp_path / "merge_ties.log").write_text("loading\n[merge/ties] tensor 3/9\r[merge/ties] tensor 7/9\n\n")
    with progress:
        progress.status("fetch", "skipped")
        progress.status("merge/ties", "running")
        progress.tick()
        progress.status("merge/ties", "done")
        progress.status("eval/base", "failed")
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:2] == ["skipped", "fetch"] and "[1/3, 0:00 elapsed]" in lines[0]
    assert lines[1].split()[:2] == ["running", "merge/ties"]
    assert lines[2].startswith(" working merge/ties for 0:00: [merge/ties] tensor 7/9")  # the heartbeat
    assert re.match(r"\s+done merge/ties in 0:00  \[2/3, 0:00 elapsed, ETA 0:00\]$", lines[3])
    assert lines[4].split()[:2] == ["failed", "eval/base"] and "[3/3" in lines[4]
    assert progress.counts == {"done": 1, "skipped": 1, "failed": 1, "blocked": 0}


def test_the_live_view_shows_running_stages_with_their_last_log_line(tmp_path):
    progress, _ = _progress(tmp_path, terminal=True)
    (tmp_path / "eval_base.log").write_text("Running generate_until requests: 40%\n")
    progress.status("fetch", "done")
    progress.status("eval/base", "running")
    view = io.StringIO()
    Console(file=view, width=120, color_system=None).print(progress.render())
    text = view.getvalue()
    assert "1/3 stages" in text and "1 run, 0 already complete" in text
    assert re.search(r"eval/base\s+0:00\s+Running generate_until requests: 40%", text)


def test_eta_is_the_pace_so_far_over_what_is_left():
    progress = RunProgress(10, lambda name: None, Console(file=io.StringIO()))
    assert progress.eta() is None
    progress.status("a", "running")
    progress.status("b", "running")  # side by side: the pace counts finished stages per second of run
    start = progress.first_start
    progress.status("a", "done")
    progress.status("b", "done")
    progress.status("c", "skipped")
    assert progress.eta(now=start + 40.0) == 7 * 20.0
    assert clock(3725) == "1:02:05" and clock(65) == "1:05"


def test_last_line_reads_the_end_of_a_large_log(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("x" * 1_000_000 + "\nstep 1\nstep 2\n  \n")
    assert last_line(log) == "step 2" and last_line(tmp_path / "missing") == ""


def test_tables_in_a_log_are_as_wide_as_their_longest_name():
    stage = "eval/merge:localize_stitch_trained/bigcode-generate"
    table = Table("stage", "kind", "key", "image", "GPUs", "reads", "status")
    table.add_row(stage, "eval", "0123456789ab", "bigcode", "1", "fetch, merge/localize_stitch_trained", "to run")
    out = io.StringIO()
    print_table(table, console=Console(file=out, width=80))  # not a terminal: what rich takes for 80 columns
    assert stage in out.getvalue() and "merge/localize_stitch_trained" in out.getvalue() and "…" not in out.getvalue()


def test_plan_table_keeps_stage_names_whole_when_piped(tmp_path):
    from click.testing import CliRunner

    from mergebench.cli.main import main

    result = CliRunner().invoke(main, ["plan", "--model", "llama-3.2-3b", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    names = [s.name for s in build_plan("llama-3.2-3b").stages]
    assert all(name in result.output for name in names) and "…" not in result.output
