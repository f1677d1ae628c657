"""lm-evaluation-harness: MergeBench's math, multilingual and instruction-following tasks.

One `lm_eval` process per group of tasks that share a few-shot setting: gsm8k_cot keeps its task
default (8-shot), the multilingual tasks and IFEval run 0-shot; all greedy. `hf` is the faithful
backend; `vllm` is the fast mode, recorded as such in every result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mergebench.errors import MergeBenchError
from mergebench.evaluation.adapters.invocation import OFFLINE_ENV, HarnessRun
from mergebench.evaluation.parsers.lmeval import parse_lmeval
from mergebench.evaluation.records import ResultRecord

IMAGE = "lmeval"
LANGS = ("fr", "es", "de", "ru")
#: group -> (tasks, num_fewshot or None for the task's own default)
GROUPS: dict[str, tuple[tuple[str, ...], int | None]] = {
    "math": (("gsm8k_cot",), None),
    "multilingual": (tuple(f"{t}_{lang}" for t in ("m_mmlu", "arc", "hellaswag") for lang in LANGS), 0),
    "instruction": (("ifeval",), 0),
}


@dataclass(frozen=True)
class LmEvalSettings:
    backend: str = "hf"  # hf (faithful) | vllm (fast)
    dtype: str = "bfloat16"
    batch_size: str = "auto"
    seed: int = 0
    log_samples: bool = True
    gpu_memory_utilization: float = 0.8
    max_model_len: int = 4096
    nltk_data: str = "/opt/nltk_data"
    limit: int | None = None  # for smoke runs only; recorded in the results

    def __post_init__(self):
        if self.backend not in ("hf", "vllm"):
            raise MergeBenchError(f"lm-eval backend {self.backend!r}: expected hf or vllm")


def model_args(model: str, s: LmEvalSettings) -> str:
    args = [f"pretrained={model}", f"dtype={s.dtype}"]
    if s.backend == "vllm":
        args += [f"gpu_memory_utilization={s.gpu_memory_utilization}", f"max_model_len={s.max_model_len}",
                 "tensor_parallel_size=1"]
    return ",".join(args)


def runs(model: str, out_dir: str | Path, settings: LmEvalSettings = LmEvalSettings(),
         groups: tuple[str, ...] = tuple(GROUPS)) -> list[HarnessRun]:
    """The lm_eval invocations for `model` (a directory visible inside the image), one per group."""
    out = []
    for group in groups:
        if group not in GROUPS:
            raise MergeBenchError(f"lm-eval task group {group!r}: expected one of {', '.join(GROUPS)}")
        tasks, shots = GROUPS[group]
        run_dir = str(Path(out_dir) / "lmeval" / group)
        argv = ["lm_eval", "--model", settings.backend, "--model_args", model_args(model, settings),
                "--tasks", ",".join(tasks), "--batch_size", settings.batch_size,
                "--seed", str(settings.seed), "--output_path", run_dir]
        if shots is not None:
            argv += ["--num_fewshot", str(shots)]
        if settings.log_samples:
            argv.append("--log_samples")
        if settings.limit is not None:
            argv += ["--limit", str(settings.limit)]
        env = {**OFFLINE_ENV, "NLTK_DATA": settings.nltk_data}
        out.append(HarnessRun("lmeval", f"lmeval-{group}", IMAGE, tuple(argv), run_dir, env, gpus=1))
    return out


def parse(out_dir: str | Path, model_label: str, settings: LmEvalSettings = LmEvalSettings()) -> list[ResultRecord]:
    """One record per group, from the newest results_*.json lm_eval wrote under each group's folder."""
    records = []
    for group in GROUPS:
        run_dir = Path(out_dir) / "lmeval" / group
        found = sorted(run_dir.glob("**/results_*.json"), key=lambda p: p.name)
        if not run_dir.is_dir():
            continue
        if not found:
            raise MergeBenchError(f"{run_dir}: lm_eval wrote no results_*.json for {model_label} (see its log)")
        record = parse_lmeval(found[-1], model=model_label)
        record.backend = record.backend or settings.backend
        records.append(record)
    return records
