"""The workspace: one directory (a named volume in containers, mounted at the same path everywhere).

    hf/       Hugging Face cache (HF_HOME), filled only by fetch stages
    models/   fetched, finetuned, merged checkpoints     stats/   Gram matrices, Fisher diagonals
    evals/    one result record per model                 reports/ report stages
    runs/     stage specs and logs, one folder per stage  .lock    held by the running orchestrator

A stage's output directory counts only when it holds manifest.json: it is written under
`<dir>.partial` and renamed when complete; `.<dir>.lock` beside it is held while a process runs the stage.
"""

from __future__ import annotations

import os
from pathlib import Path

from mergebench.errors import MergeBenchError
from mergebench.pipeline.stage import CATEGORY, Stage

MANIFEST = "manifest.json"
SUBDIRS = ("hf", "models", "data", "stats", "evals", "reports", "runs")


class Workspace:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()

    def ensure(self) -> Workspace:
        try:
            for sub in SUBDIRS:
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            probe = self.root / "runs" / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise MergeBenchError(f"workspace {self.root} is not writable ({e.strerror}); choose another with "
                                  "--workspace DIR") from None
        return self

    @property
    def hf_home(self) -> Path:
        return self.root / "hf"

    def output(self, stage: Stage) -> Path:
        return self.root / CATEGORY[stage.kind] / stage.dirname

    def partial(self, stage: Stage) -> Path:
        out = self.output(stage)
        return out.with_name(out.name + ".partial")

    def lock(self, stage: Stage) -> Path:
        """Held by the process running the stage (pipeline/lock.py StageLock): beside its output, where
        that process can write whichever user or container it runs as."""
        out = self.output(stage)
        return out.with_name(f".{out.name}.lock")

    def run_dir(self, stage: Stage) -> Path:
        return self.root / "runs" / stage.dirname

    def log(self, stage: Stage) -> Path:
        return self.run_dir(stage) / "log.txt"

    def is_complete(self, stage: Stage) -> bool:
        return (self.output(stage) / MANIFEST).is_file()
