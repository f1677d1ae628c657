"""`mergebench rehearse`: the real path of a hub family, run here end to end.

1. the family is built once (rehearsal/family.py): SmolLM2-135M-Instruct and five few-step specialists;
2. the hub double starts on 127.0.0.1, serving that family (its base gated, like Llama's), MergeBench's
   validation and SFT sets and every evaluation dataset (stand-ins), and an NLTK index;
3. `mergebench reproduce --model <family file> --device cpu` runs as a user would run it, in a separate
   process, with HF_ENDPOINT and HF_TOKEN pointing at the double: the fetch stages download online (the
   harness ones inside their harness's environment), every later stage runs with the hub offline, and
   the evaluations are lm-eval's and the bigcode harness's own tasks with MergeBench's argv.

Only the hub's contents are stand-ins; the scores mean nothing. Requests the double could not answer
are written to `<workspace>/rehearsal/hub-misses.txt`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mergebench.errors import MergeBenchError

DEFAULT_METHODS = ("task_arithmetic", "ties", "regmean")


@dataclass(frozen=True)
class Rehearsal:
    workspace: Path
    runtime: str = "local"
    methods: tuple[str, ...] = DEFAULT_METHODS
    eval_limit: int = 2
    tasks: tuple[str, ...] | None = None
    eval_models: tuple[str, ...] | None = None
    gen_kwargs: str | None = None
    #: A clone of bigcode-evaluation-harness at its pinned commit (None: no bigcode): the harness the local
    #: runtime runs, and what the docker runtime's bigcode CPU image was built from (make rehearse does).
    bigcode_source: Path | None = None
    steps: int = 2
    jobs: int = 2
    results: Path = Path("results")

    @property
    def harnesses(self) -> tuple[str, ...]:
        return ("lmeval", "bigcode") if self.bigcode_source is not None else ("lmeval",)

    def reproduce_argv(self, family: Path) -> list[str]:
        argv = [sys.executable, "-m", "mergebench.cli.main", "reproduce", "--model", str(family),
                "--runtime", self.runtime, "--workspace", str(self.workspace / "pipeline"),
                "--results", str(self.results), "--device", "cpu", "--harnesses", ",".join(self.harnesses),
                "--eval-limit", str(self.eval_limit), "--jobs", str(self.jobs)]
        for method in self.methods:
            argv += ["--methods", method]
        for flag, value in (("--tasks", self.tasks), ("--eval-models", self.eval_models)):
            if value:
                argv += [flag, ",".join(value)]
        if self.gen_kwargs:
            argv += ["--gen-kwargs", self.gen_kwargs]
        return argv


def check(r: Rehearsal) -> None:
    if r.runtime not in ("local", "docker"):
        raise MergeBenchError(f"--runtime {r.runtime!r}: the rehearsal runs on local or docker")
    if r.bigcode_source is not None and not (Path(r.bigcode_source) / "bigcode_eval").is_dir():
        raise MergeBenchError(f"{r.bigcode_source}: not a bigcode-evaluation-harness checkout (no bigcode_eval/)")


def rehearse(r: Rehearsal, say: Callable[[str], None] = print) -> int:
    """Build, serve, run; the exit code of the reproduce run."""
    from mergebench.rehearsal.family import build_base, build_specialists, family_file, repo_id
    from mergebench.rehearsal.hub_double import HubDouble
    from mergebench.rehearsal.standins import publish_model, write_all

    check(r)
    build = Path(r.workspace).resolve() / "rehearsal"
    base = build_base(build, say)
    hub_root = build / "hub"
    write_all(hub_root)
    with HubDouble(hub_root) as hub:
        specialists = build_specialists(build, base, hub.url, hub.token, r.steps, say)
        publish_model(hub_root, repo_id("base"), base, gated=True)
        for domain, path in specialists.items():
            publish_model(hub_root, repo_id(domain), path)
        family = family_file(build / "smollm2-rehearsal.yaml")
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": hub.token, "MERGEBENCH_NLTK_INDEX": f"{hub.url}/nltk/index.xml"}
        if r.runtime == "docker":
            env.update({"MERGEBENCH_FETCH_NETWORK": "host", "MERGEBENCH_IMAGE_TRACK": "cpu"})
        elif r.bigcode_source is not None:
            env["MERGEBENCH_BIGCODE_DIR"] = str(Path(r.bigcode_source).resolve())
        argv = r.reproduce_argv(family)
        say(f"[rehearse] hub double at {hub.url}; {' '.join(argv[3:])}")
        code = subprocess.run(argv, env={**os.environ, **env}).returncode
        (build / "hub-misses.txt").write_text("".join(f"{m}\n" for m in hub.misses))
    say(f"[rehearse] {'passed' if code == 0 else f'failed (exit {code})'}; the double answered "
        f"{len(hub.requests)} requests, {len(hub.misses)} not found (optional files clients probe for): "
        f"{build / 'hub-misses.txt'}")
    return code
