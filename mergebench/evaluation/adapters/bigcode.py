"""bigcode-evaluation-harness: HumanEval+ and MBPP+ pass@1, generation and execution kept apart.

Generation runs on the GPU in the bigcode image (`--generation_only --save_generations`); executing
the generated programs runs in a separate sandboxed CPU container (`--load_generations_path
--allow_code_execution`), because the harness's in-process sandbox is no security boundary. The
harness loads one generations file for all tasks it evaluates, so execution runs once per task, and
the per-task metric files are combined into one code_eval.json of the harness's own shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mergebench.errors import MergeBenchError
from mergebench.evaluation.adapters.invocation import OFFLINE_ENV, HarnessRun, Sandbox
from mergebench.evaluation.parsers.bigcode import parse_bigcode
from mergebench.evaluation.records import ResultRecord

IMAGE = "bigcode"
EXEC_IMAGE = "bigcode"  # the same harness, run with the sandbox's container settings and no GPU
TASKS = ("humanevalplus", "mbppplus")
HARNESS_DIR = "/opt/bigcode-evaluation-harness"


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
    sandbox: Sandbox = Sandbox()


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
    for task in tasks:
        if task not in TASKS:
            raise MergeBenchError(f"bigcode task {task!r}: expected one of {', '.join(TASKS)}")
        gen = ["accelerate", "launch", "main.py", "--model", model, *_common(settings, task),
               "--generation_only", "--save_generations", "--save_generations_path", str(out_root / "generations.json")]
        exe = ["python", "main.py", "--model", model, *_common(settings, task), "--allow_code_execution",
               "--load_generations_path", str(generations_path(generations_dir or out_dir, task)),
               "--metric_output_path", str(out_root / f"code_eval_{task}.json")]
        env = dict(OFFLINE_ENV)
        result.append(HarnessRun("bigcode", f"bigcode-generate-{task}", IMAGE, tuple(gen), str(out_root), env,
                                 gpus=1, workdir=HARNESS_DIR))
        result.append(HarnessRun("bigcode", f"bigcode-execute-{task}", EXEC_IMAGE, tuple(exe), str(out_root),
                                 {**env, "HF_ALLOW_CODE_EVAL": "1"}, gpus=0, workdir=HARNESS_DIR,
                                 sandbox=settings.sandbox))
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


def parse(out_dir: str | Path, model_label: str) -> ResultRecord:
    return parse_bigcode(combine(out_dir), model=model_label)
