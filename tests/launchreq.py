"""A launch request for a stage, made without a plan or a spec on disk: tests of a runtime's translation
(exact argv, container settings, job scripts) hand it what the pipeline's `launch_request` would."""

from __future__ import annotations

from pathlib import Path

from mergebench.pipeline.stage import HUB_KINDS, Stage
from mergebench.runtimes.request import LaunchRequest


def request_for(stage: Stage, spec: str | Path, env: dict[str, str], log: str | Path | None = None,
                after: tuple[str, ...] = ()) -> LaunchRequest:
    spec = Path(spec)
    ws = Path(env["MERGEBENCH_WORKSPACE"])
    return LaunchRequest(name=stage.name, kind=stage.kind, key=stage.key, image=stage.image, specs=(spec,),
                         log=Path(log) if log else spec.parent / "log.txt", workspace=ws,
                         done=ws / "models" / stage.dirname / "manifest.json", env=env, gpus=stage.gpus,
                         hub=stage.kind in HUB_KINDS, after=after)
