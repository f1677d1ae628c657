"""Run a plan: ready stages in dependency order, complete ones skipped, GPU stages on free GPUs.

A failed stage stops only its dependants; the run goes on with everything else and ends with a
summary naming what failed and where its log is. Ctrl-C or SIGTERM stops every running stage.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mergebench.errors import MergeBenchError
from mergebench.pipeline.execute import promote
from mergebench.pipeline.launch import launch_request, stage_env
from mergebench.pipeline.lock import WorkspaceLock
from mergebench.pipeline.plan import Plan
from mergebench.pipeline.stage import Stage
from mergebench.pipeline.workspace import Workspace
from mergebench.runtimes.base import Handle, Runtime

__all__ = ["RunSummary", "Runner", "stage_env"]

StatusFn = Callable[[str, str], None]  # (stage name, status)


@dataclass
class RunSummary:
    status: dict[str, str] = field(default_factory=dict)  # name -> done | skipped | failed | blocked
    seconds: dict[str, float] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [n for n, s in self.status.items() if s == "failed"]

    @property
    def blocked(self) -> list[str]:
        return [n for n, s in self.status.items() if s == "blocked"]


class Runner:
    def __init__(self, plan: Plan, ws: Workspace, runtime: Runtime, gpus: list[int] | None = None,
                 max_cpu_jobs: int = 1, on_status: StatusFn | None = None, poll_s: float = 0.2,
                 on_tick: Callable[[], None] | None = None):
        self.plan, self.ws, self.runtime = plan, ws, runtime
        self.free_gpus = list(gpus or [])
        self.max_cpu_jobs = max_cpu_jobs
        self.on_status = on_status or (lambda name, status: None)
        self.poll_s = poll_s
        self.on_tick = on_tick or (lambda: None)  # once per scheduling round: a live view redraws

    def forced(self, patterns: list[str]) -> set[str]:
        """Stages named (or whose kind is named) by --force, plus everything downstream of them."""
        hit = {s.name for s in self.plan.stages if s.name in patterns or s.kind in patterns}
        unknown = [p for p in patterns if not any(p in (s.name, s.kind) for s in self.plan.stages)]
        if unknown:
            raise MergeBenchError(f"--force {unknown[0]!r}: no such stage or stage kind in this plan")
        return hit | {d for name in hit for d in self.plan.downstream(name)}

    def run(self, force: list[str] | None = None) -> RunSummary:
        self.ws.ensure()
        with WorkspaceLock(self.ws.root):
            self.runtime.check({s.image for s in self.plan.stages}, any(s.gpus for s in self.plan.stages))
            return self._run(self.forced(force or []))

    def _run(self, forced: set[str]) -> RunSummary:
        summary = RunSummary()
        pending = list(self.plan.stages)
        running: list[_Job] = []
        stopping = {"signal": None}

        def on_signal(signum, frame):
            stopping["signal"] = signum

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while pending or running:
                if stopping["signal"] is not None:
                    for job in running:
                        job.handle.stop()
                    raise KeyboardInterrupt
                self._reap(running, summary)
                self._start_ready(pending, running, summary, forced)
                self.on_tick()
                if running:
                    time.sleep(self.poll_s)
                elif pending:  # nothing runs, nothing could start: a GPU shortage, or an input outside the plan
                    stage = next((s for s in pending if s.gpus > len(self.free_gpus)), None)
                    if stage is None:
                        names = set(self.plan.by_name)
                        waiting = next(s for s in pending if set(s.inputs.values()) - names)
                        raise MergeBenchError(f"stage {waiting.name} reads {sorted(set(waiting.inputs.values()) - names)[0]}, "
                                              "which is neither in this plan nor complete")
                    raise MergeBenchError(f"stage {stage.name} needs {stage.gpus} GPU(s) but {len(self.free_gpus)} "
                                          "were given; pass them with --gpus 0,1,... (or run MODEL=tiny on CPU)")
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        return summary

    def _mark(self, summary: RunSummary, stage: Stage, status: str) -> None:
        summary.status[stage.name] = status
        self.on_status(stage.name, status)

    def _start_ready(self, pending, running, summary, forced) -> None:
        ready = []
        for stage in list(pending):
            deps = [summary.status.get(name) for name in stage.inputs.values()]
            if any(d in ("failed", "blocked") for d in deps):
                pending.remove(stage)
                self._mark(summary, stage, "blocked")
            elif all(d in ("done", "skipped") for d in deps):
                if self.ws.is_complete(stage) and stage.name not in forced:
                    pending.remove(stage)
                    self._mark(summary, stage, "skipped")
                else:
                    ready.append(stage)
        cpu_jobs = sum(1 for job in running if not job.gpus)
        for stage in ready:
            if stage not in pending:
                continue  # taken into an earlier batch
            if stage.gpus:
                if stage.gpus > len(self.free_gpus):
                    continue
                batch = [stage]
            else:
                if cpu_jobs >= self.max_cpu_jobs:
                    continue
                batch = self._cpu_batch(stage, [s for s in ready if s in pending], self.max_cpu_jobs - cpu_jobs)
                cpu_jobs += 1
            self._launch(batch, pending, running, forced)

    def _cpu_batch(self, first: Stage, ready: list[Stage], free_slots: int) -> list[Stage]:
        """Ready CPU stages of the same kind share one process where the runtime allows it: a stage
        process spends seconds importing torch and friends, more than a tiny stage's work."""
        if not getattr(self.runtime, "batches", False) or first.params.get("sandbox"):
            return [first]  # a sandboxed stage sees only its own folders: one per process
        same = [s for s in ready if s.kind == first.kind and s.image == first.image and not s.gpus
                and not s.params.get("sandbox")]
        size = -(-len(same) // max(1, free_slots))
        return same[:size]

    def _launch(self, batch: list[Stage], pending, running, forced) -> None:
        for stage in batch:
            if stage.name in forced and self.ws.output(stage).exists():
                shutil.rmtree(self.ws.output(stage))
            pending.remove(stage)
        gpus = [self.free_gpus.pop(0) for _ in range(batch[0].gpus)]
        threads = None if gpus else max(1, (os.cpu_count() or 1) // self.max_cpu_jobs)
        request = launch_request(self.ws, batch, self.plan.by_name, stage_env(self.ws, batch[0].kind, threads))
        handle = self.runtime.start(request, gpus)
        running.append(_Job(handle, gpus, time.time(), batch))
        for stage in batch:
            self.on_status(stage.name, "running")

    def _reap(self, running, summary) -> None:
        for job in list(running):
            # polled before the outputs are looked at: a process that completes its output and exits between
            # the two looks must not read as one that exited without it
            code = job.handle.poll()
            for stage in job.stages:  # a batch reports each stage as soon as its output is complete
                if stage.name not in job.reported and self.ws.is_complete(stage):
                    job.reported.add(stage.name)
                    summary.seconds[stage.name] = time.time() - job.started
                    summary.logs[stage.name] = str(self.ws.log(stage))
                    self._mark(summary, stage, "done")
            if code is None:
                continue
            running.remove(job)
            self.free_gpus.extend(job.gpus)
            for stage in job.stages:
                if stage.name in job.reported:
                    continue
                if code == 0 and stage.params.get("sandbox") and self._promote_sandboxed(stage):
                    job.reported.add(stage.name)
                    summary.seconds[stage.name] = time.time() - job.started
                    summary.logs[stage.name] = str(self.ws.log(stage))
                    self._mark(summary, stage, "done")
                    continue
                self.ws.log(stage).parent.mkdir(parents=True, exist_ok=True)  # a process that never started
                with open(self.ws.log(stage), "a") as fh:
                    cause = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                    fh.write(f"\n[runner] stage {stage.name} failed: {cause}\n")
                summary.seconds[stage.name] = time.time() - job.started
                summary.logs[stage.name] = str(self.ws.log(stage))
                self._mark(summary, stage, "failed")

    def _promote_sandboxed(self, stage: Stage) -> bool:
        """A sandboxed stage's process cannot rename its output (it sees only that folder): done here, after
        its files are given back to the caller where the sandbox ran them as another user."""
        partial = self.ws.partial(stage)
        if os.getuid() == 0 and partial.is_dir():
            for path in [partial, *partial.rglob("*")]:
                os.lchown(path, 0, 0)
        return promote(partial, self.ws.output(stage))


@dataclass
class _Job:
    """One launched process: a stage, or a batch of same-kind CPU stages run one after another."""

    handle: Handle
    gpus: list[int]
    started: float
    stages: list[Stage]
    reported: set[str] = field(default_factory=set)
