"""`mergebench stage run SPEC`: the one entry point every runtime launches, wherever it runs.

It runs the stage's kind into `<output>.partial`, writes manifest.json there, and renames the folder
to its final name: a stage's output exists completely or not at all.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergebench.errors import MergeBenchError
from mergebench.files import write_text_atomic
from mergebench.pipeline.lock import StageLock
from mergebench.pipeline.manifest import stage_manifest
from mergebench.pipeline.stage import Stage
from mergebench.pipeline.workspace import MANIFEST, Workspace

KINDS = ("tiny_build", "fetch", "fetch_tasks", "local_family", "stats", "merge", "eval", "tune", "report")


@dataclass
class StageContext:
    """What a stage kind sees: its parameters, its inputs' output folders, and where to write."""

    stage: Stage
    workspace: Workspace
    inputs: dict[str, Path]
    out: Path

    @property
    def params(self) -> dict[str, Any]:
        return self.stage.params

    def final_path(self, path: str | os.PathLike) -> str:
        """Where `path`, inside the `.partial` folder this stage writes, will be once the stage is
        complete: what records that name their files must point at."""
        try:
            return str(self.workspace.output(self.stage) / Path(path).relative_to(self.out))
        except ValueError:
            return str(path)


def write_spec(ws: Workspace, stage: Stage, stages: dict[str, Stage]) -> Path:
    spec = {"stage": stage.to_dict(), "workspace": str(ws.root),
            "inputs": {role: str(ws.output(stages[name])) for role, name in stage.inputs.items()}}
    path = ws.run_dir(stage) / "spec.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(spec, indent=2) + "\n")  # an adopted container may be reading it
    return path


def run_spec(spec_path: str | os.PathLike) -> int:
    """Run one stage from its spec; returns the exit code (0 done, 1 failed)."""
    try:
        spec = json.loads(Path(spec_path).read_text())
        stage = Stage.from_dict(spec["stage"])
        ws = Workspace(spec["workspace"])
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise MergeBenchError(f"{spec_path}: not a valid stage spec ({e})") from None
    if stage.kind not in KINDS:
        raise MergeBenchError(f"{spec_path}: unknown stage kind {stage.kind!r} (known: {', '.join(KINDS)})")
    with StageLock(ws.lock(stage), stage.name, say=lambda text: print(text, flush=True)):
        return _run_locked(stage, ws, spec)


def _run_locked(stage: Stage, ws: Workspace, spec: dict[str, Any]) -> int:
    final, partial = ws.output(stage), ws.partial(stage)
    if (final / MANIFEST).is_file():
        print(f"[{stage.name}] already complete: {final}")
        return 0
    inputs = {role: Path(p) for role, p in spec.get("inputs", {}).items()}
    for role, path in inputs.items():
        if not (path / MANIFEST).is_file():
            raise MergeBenchError(f"stage {stage.name}: input {role} ({path}) is not complete")
    sandboxed = os.environ.get("MERGEBENCH_SANDBOXED") == "1"  # partial is a mount point: empty, never renamed
    if sandboxed:
        for child in partial.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    else:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    started = time.time()
    ctx = StageContext(stage, ws, inputs, partial)
    print(f"[{stage.name}] {stage.kind} → {final}", flush=True)
    try:
        module = importlib.import_module(f"mergebench.pipeline.kinds.{stage.kind}")
        extra = module.run(ctx) or {}
    except MergeBenchError as e:
        print(f"[{stage.name}] error: {e}", flush=True)
        return 1
    except Exception:  # noqa: BLE001 - a failed stage must report, keep its log, and not crash the runner
        traceback.print_exc()
        return 1
    manifest = stage_manifest(stage.to_dict(), started, 0, extra)
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    if sandboxed:
        print(f"[{stage.name}] done in {time.time() - started:.1f} s (the runner moves it into place)", flush=True)
        return 0
    promote(partial, final)
    print(f"[{stage.name}] done in {time.time() - started:.1f} s", flush=True)
    return 0


def promote(partial: Path, final: Path) -> bool:
    """Rename a finished `.partial` folder (it holds its manifest) to its final name; False when there is
    none. A sandboxed stage cannot do it itself: the runner calls this once its process exited with 0."""
    if not (partial / MANIFEST).is_file():
        return False
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    return True


def run_specs(specs: list[str], own_logs: bool = False) -> int:
    """Several independent stages in this one process (a batch); each keeps its own log when asked.
    A failed stage does not stop the others: they do not depend on each other."""
    import contextlib
    import sys

    code = 0
    for spec in specs:
        if not own_logs:
            code |= run_spec(spec)
            continue
        data = json.loads(Path(spec).read_text())
        log = Workspace(data["workspace"]).log(Stage.from_dict(data["stage"]))
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
            try:
                result = run_spec(spec)
            except MergeBenchError as e:
                print(f"error: {e}")
                result = 1
        if result:
            print(f"stage from {spec} failed; see {log}", file=sys.stderr)
        code |= result
    return code
