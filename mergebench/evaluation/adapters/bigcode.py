"""bigcode-evaluation-harness: HumanEval+ and MBPP+ pass@1, generation and execution kept apart.

Generation runs on the GPU in the bigcode image (`--generation_only --save_generations`); executing
the generated programs runs in a separate sandboxed CPU container (`--load_generations_path
--allow_code_execution`), because the harness's in-process sandbox is no security boundary. The
harness loads one generations file for all tasks it evaluates, so execution runs once per task, and
the per-task metric files are combined into one code_eval.json of the harness's own shape.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from mergebench.errors import MergeBenchError
from mergebench.evaluation.adapters.invocation import OFFLINE_ENV, HarnessRun, hub_error, known_tasks
from mergebench.evaluation.parsers.bigcode import parse_bigcode
from mergebench.evaluation.records import ResultRecord

IMAGE = "bigcode"
EXEC_IMAGE = "bigcode"  # the same harness, run with the sandbox's container settings and no GPU
TASKS = ("humanevalplus", "mbppplus")
#: The hub dataset each task reads (the harness's DATASET_PATH): what the plan's fetch/bigcode stage prepares.
TASK_DATASETS = {"humanevalplus": "evalplus/humanevalplus", "mbppplus": "evalplus/mbppplus"}
#: Where the harness's checkout is: its place in the bigcode image, or MERGEBENCH_BIGCODE_DIR (a local clone
#: of the pinned commit, for the local runtime).
HARNESS_DIR = "/opt/bigcode-evaluation-harness"


def harness_dir() -> str:
    return os.environ.get("MERGEBENCH_BIGCODE_DIR") or HARNESS_DIR


@dataclass(frozen=True)
class BigcodeSettings:
    temperature: float = 0.2
    top_p: float = 0.95
    n_samples: int = 10
    max_length_generation: int = 512
    precision: str = "bf16"
    batch_size: int = 10
    seed: int = 0
    limit: int | None = None


def check_tasks(tasks) -> tuple[str, ...]:
    return known_tasks("bigcode", tasks, TASKS)


def fetch_params(tasks: tuple[str, ...]) -> dict:
    """What the plan's fetch/bigcode stage brings for `tasks`."""
    return {"datasets": sorted({TASK_DATASETS[t] for t in tasks})}


def _common(s: BigcodeSettings, task: str) -> list[str]:
    argv = ["--tasks", task, "--temperature", str(s.temperature), "--top_p", str(s.top_p), "--do_sample", "True",
            "--n_samples", str(s.n_samples), "--max_length_generation", str(s.max_length_generation),
            "--precision", s.precision, "--batch_size", str(s.batch_size), "--seed", str(s.seed)]
    if s.limit is not None:
        argv += ["--limit", str(s.limit)]
    return argv


def generations_path(out_dir: str | Path, task: str) -> Path:
    """Where the harness writes a task's generations: it appends `_<task>` to --save_generations_path."""
    return Path(out_dir) / "bigcode" / f"generations_{task}.json"


def runs(model: str, out_dir: str | Path, settings: BigcodeSettings = BigcodeSettings(),
         tasks: tuple[str, ...] = TASKS, generations_dir: str | Path | None = None) -> list[HarnessRun]:
    """Per task: a GPU generation run, then a sandboxed execution run (in that order).

    The two run in different stages (GPU image, then sandbox); `generations_dir` is where the
    generation stage wrote its files when it is not `out_dir`.
    """
    out_root = Path(out_dir) / "bigcode"
    result = []
    workdir = harness_dir()
    for task in check_tasks(tasks):
        gen = ["accelerate", "launch", "main.py", "--model", model, *_common(settings, task),
               "--generation_only", "--save_generations", "--save_generations_path", str(out_root / "generations.json")]
        exe = ["python", "main.py", "--model", model, *_common(settings, task), "--allow_code_execution",
               "--load_generations_path", str(generations_path(generations_dir or out_dir, task)),
               "--metric_output_path", str(out_root / f"code_eval_{task}.json")]
        env = dict(OFFLINE_ENV)
        result.append(HarnessRun("bigcode", f"bigcode-generate-{task}", IMAGE, tuple(gen), str(out_root), env,
                                 gpus=1, workdir=workdir))
        result.append(HarnessRun("bigcode", f"bigcode-execute-{task}", EXEC_IMAGE, tuple(exe), str(out_root),
                                 {**env, "HF_ALLOW_CODE_EVAL": "1"}, gpus=0, workdir=workdir,
                                 sandboxed=True))
    return result


def combine(out_dir: str | Path, tasks: tuple[str, ...] = TASKS) -> Path:
    """Merge the per-task metric files into code_eval.json (tasks plus the last run's config)."""
    out_root = Path(out_dir) / "bigcode"
    combined: dict = {}
    for task in tasks:
        path = out_root / f"code_eval_{task}.json"
        if not path.is_file():
            raise MergeBenchError(f"{path}: the bigcode execution run for {task} wrote no metrics (see its log)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise MergeBenchError(f"{path}: invalid JSON ({e.msg})") from None
        if task not in data:
            raise MergeBenchError(f"{path}: has no results for task {task}")
        combined[task] = data[task]
        combined["config"] = {**data.get("config", {}), "tasks": ",".join(tasks)}
    target = out_root / "code_eval.json"
    tmp = target.with_suffix(".json.partial")
    tmp.write_text(json.dumps(combined, indent=2) + "\n")
    tmp.replace(target)
    return target


def parse(out_dir: str | Path, model_label: str, tasks: tuple[str, ...] = TASKS) -> ResultRecord:
    return parse_bigcode(combine(out_dir, tasks), model=model_label)


def export_datasets(tasks: tuple[str, ...], hf_home: Path, dest: Path) -> Path:
    """Copy the HF cache entries of `tasks`' datasets (hub files and the prepared arrow tables) into
    `dest`, a private HF_HOME: the sandboxed execution stage reads the test cases from there and sees
    nothing else of the user's cache (no token, no other model's weights)."""
    import shutil

    for task in check_tasks(tasks):
        org, name = TASK_DATASETS[task].split("/")
        found = False
        for sub in (f"hub/datasets--{org}--{name}", f"datasets/{org}___{name}"):
            src = hf_home / sub
            if src.is_dir():
                shutil.copytree(src, dest / sub, symlinks=True, dirs_exist_ok=True)
                found = True
        if not found:
            raise MergeBenchError(f"bigcode task {task}: dataset {TASK_DATASETS[task]} is not in the HF cache "
                                  f"{hf_home}; the plan's fetch/bigcode stage prepares it")
    return dest


def prepare(tasks: tuple[str, ...], out: Path, say=print) -> dict:
    """With the hub reachable: each task built by the harness itself (its `Task.__init__` loads its dataset
    with this environment's `datasets`), in the harness's checkout. The harness only warns when a load
    fails, so each task's dataset is checked to be there. Runs in the bigcode image."""
    import sys

    root = harness_dir()
    if not Path(root, "bigcode_eval").is_dir():
        raise MergeBenchError(f"fetch for bigcode: no bigcode-evaluation-harness checkout at {root} "
                              "(set MERGEBENCH_BIGCODE_DIR to a clone of its pinned commit, or run in the bigcode image)")
    sys.path.insert(0, root)
    from bigcode_eval.tasks import get_task

    for task in check_tasks(tasks):
        repo = TASK_DATASETS[task]
        say(f"[fetch] bigcode {task}: {repo}")
        try:
            loaded = getattr(get_task(task), "dataset", None)
        except Exception as e:  # noqa: BLE001 - one line naming the repo
            raise MergeBenchError(f"fetch {repo} for bigcode task {task}: {hub_error(e)}") from None
        if loaded is None:
            raise MergeBenchError(f"fetch {repo} for bigcode task {task}: the harness could not load it "
                                  "(its warning is above)")
    return {"tasks": list(tasks), "harness_dir": root}
