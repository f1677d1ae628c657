"""Run a harness's processes where the harness is installed (its image, or a venv that has it) and
turn what they wrote into one result record. Used by `mergebench eval` and the pipeline's eval stage."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from mergebench.errors import MergeBenchError
from mergebench.evaluation.adapters.invocation import HarnessRun
from mergebench.evaluation.records import ResultRecord


def harness_env(extra: dict[str, str]) -> dict[str, str]:
    """The harness CLIs (`lm_eval`, `accelerate`, `python`) are this environment's own, found first on
    PATH, even when the kit is called as `.venv/bin/mergebench` without activating the venv.

    The GPUs are the launcher's: a runtime that gave this stage GPU 3 set CUDA_VISIBLE_DEVICES=3, and an
    adapter's own default (safety-eval's "0") applies only where nobody chose (a bare `mergebench eval`)."""
    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    env = {**os.environ, "PATH": bin_dir + (os.pathsep + path if path else ""), **extra}
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


def run_processes(runs: list[HarnessRun], harness: str, label: str, log_dir: Path, say=print) -> None:
    """Each run in turn, its output in `<log_dir>/<run name>.log`; the first failure stops with a
    one-line error naming harness, run and model, and the log stays."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for run in runs:
        Path(run.out_dir).mkdir(parents=True, exist_ok=True)
        log = log_dir / f"{run.name}.log"
        say(f"{run.name}: {run.shell()}  (log: {log})")
        try:
            with open(log, "w") as fh:
                code = subprocess.run(list(run.argv), cwd=run.workdir, env=harness_env(run.env), stdout=fh,
                                      stderr=subprocess.STDOUT).returncode
        except FileNotFoundError:
            raise MergeBenchError(f"{harness} for model {label}: {run.argv[0]!r} not found; run this inside the "
                                  f"{run.image} image (or install the harness)") from None
        if code != 0:
            missing = missing_dataset(log)
            if missing:
                raise MergeBenchError(f"{harness} run {run.name} for model {label} exited with code {code}: dataset "
                                      f"{missing} is not in the "
                                      f"HF cache (HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}); the "
                                      f"plan's fetch/{harness} stage prepares it (mergebench reproduce --force "
                                      f"fetch/{harness}); its log: {log}")
            raise MergeBenchError(f"{harness} run {run.name} for model {label} exited with code {code}; "
                                  f"its log: {log}")


#: How `datasets` says, with the hub offline, that a dataset was never prepared in its cache.
OFFLINE_MISS = re.compile(r"Couldn't reach '([^']+)' on the Hub")


def missing_dataset(log: Path) -> str | None:
    """The dataset a harness's run could not find offline, from its log, or None."""
    try:
        found = OFFLINE_MISS.findall(log.read_text(errors="replace")[-200_000:])
    except OSError:
        return None
    return found[-1] if found else None


def combine_records(records: list[ResultRecord], label: str, harness: str) -> ResultRecord:
    """One record from a harness's several outputs (lm-eval writes one per task group)."""
    if not records:
        raise MergeBenchError(f"{harness} wrote no results for model {label}")
    if len(records) == 1:
        return records[0]
    first = records[0]
    return ResultRecord(label, harness, {k: v for r in records for k, v in r.metrics.items()},
                        {k: v for r in records for k, v in r.stderr.items()}, first.harness_version,
                        first.harness_commit, first.backend, [s for r in records for s in r.sources], first.config)


def parse_record(adapter, out_dir: Path, label: str, harness: str, tasks: tuple[str, ...] | None = None) -> ResultRecord:
    """One record from what the harness wrote; `tasks` where a bigcode run evaluated only some of its tasks."""
    parsed = adapter.parse(str(out_dir), label, tasks) if tasks is not None else adapter.parse(str(out_dir), label)
    return combine_records(parsed if isinstance(parsed, list) else [parsed], label, harness)
