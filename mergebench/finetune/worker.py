"""One rank of a DeepSpeed launch: `python -m mergebench.finetune.worker JOB.json` (started by torchrun)."""

from __future__ import annotations

import sys
from pathlib import Path

from mergebench.errors import MergeBenchError


def main(argv: list[str] | None = None) -> int:
    from mergebench.finetune.job import Job, is_main_rank, progress_printer, run_job

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mergebench.finetune.worker JOB.json", file=sys.stderr)
        return 2
    job = Job.load(Path(args[0]))
    try:
        result = run_job(job, progress_printer(job.name, lambda line: print(line, flush=True)))
    except MergeBenchError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    if is_main_rank():
        print(f"[finetune {job.name}] wrote {result.out} ({result.steps} steps)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
