"""From stages to launch requests: the one thing the pipeline hands a runtime (runtimes/request.py).

Here the pipeline decides everything a runtime must not: a stage's environment (the workspace's HF
cache, the hub offline except for hub stages, threads when CPU stages share the cores), its spec file,
its log, whether it runs generated code and under which sandbox policy (docker/images.yaml's), and
which requests it waits on. `submit_plan` hands a whole plan to a runtime that submits requests at
once (Slurm): the requests of every stage that is not complete, in plan order.
"""

from __future__ import annotations

from pathlib import Path

from mergebench.pipeline.execute import write_spec
from mergebench.pipeline.lock import WorkspaceLock
from mergebench.pipeline.plan import Plan
from mergebench.pipeline.stage import HUB_KINDS, Stage
from mergebench.pipeline.workspace import MANIFEST, Workspace
from mergebench.runtimes.request import LaunchRequest
from mergebench.runtimes.sandbox import SandboxPolicy, SandboxRequest


def stage_env(ws: Workspace, kind: str, threads: int | None = None) -> dict[str, str]:
    """Every stage sees the workspace's HF cache; only fetch stages may reach the hub. CPU stages that
    run side by side share the cores instead of each taking all of them."""
    env = {"HF_HOME": str(ws.hf_home), "MERGEBENCH_WORKSPACE": str(ws.root)}
    if threads:
        env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    if kind not in HUB_KINDS:
        env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return env


def batch_log_path(logs: list[Path]) -> Path:
    """Where a batch's own output goes (what its process prints between stages): beside the stages' logs."""
    return logs[0].parent.parent / f"batch-{logs[0].parent.name}.log"


def launch_request(ws: Workspace, stages: list[Stage], by_name: dict[str, Stage], env: dict[str, str] | None = None,
                   after: tuple[str, ...] = (), policy: SandboxPolicy | None = None) -> LaunchRequest:
    """The request that runs `stages` (one, or a batch of same-kind CPU stages), their specs written.
    A stage that runs generated code gets `policy` (default: docker/images.yaml's) and exactly the
    folders it may see."""
    first = stages[0]
    specs = tuple(write_spec(ws, stage, by_name) for stage in stages)
    sandbox = None
    if first.params.get("sandbox"):
        if len(stages) > 1:
            raise ValueError(f"stage {first.name} runs generated code: it is never batched")
        sandbox = SandboxRequest(policy or SandboxPolicy.from_images_yaml(),
                                 reads=(str(specs[0].parent), *(str(ws.output(by_name[n])) for n in first.inputs.values())),
                                 output=str(ws.partial(first)), lock=str(ws.lock(first)), workspace=str(ws.root))
    log = ws.log(first) if len(stages) == 1 else batch_log_path([ws.log(s) for s in stages])
    return LaunchRequest(name=",".join(s.name for s in stages), kind=first.kind, key=first.key, image=first.image,
                         specs=specs, log=log, workspace=ws.root, done=ws.output(first) / MANIFEST,
                         env=env if env is not None else stage_env(ws, first.kind), gpus=first.gpus,
                         hub=first.kind in HUB_KINDS, sandbox=sandbox, after=tuple(after))


def submit_plan(plan: Plan, ws: Workspace, runtime):
    """Every stage of `plan` that is not complete, as requests waiting on their inputs that are not
    complete either, submitted at once by `runtime` (its `submit(requests, root)`) under the workspace's
    lock; the result lists the complete stages too."""
    ws.ensure()
    with WorkspaceLock(ws.root):
        todo = [s for s in plan.stages if not ws.is_complete(s)]
        runtime.check({s.image for s in todo}, any(s.gpus for s in todo))
        waiting = {s.name for s in todo}
        complete = [s.name for s in plan.stages if s.name not in waiting]
        requests = [launch_request(ws, [s], plan.by_name,
                                   after=tuple(dict.fromkeys(n for n in s.inputs.values() if n in waiting)))
                    for s in todo]
        result = runtime.submit(requests, ws.root)
        result.complete = complete
        return result
