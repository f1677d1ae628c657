"""allenai safety-eval: generations with vLLM on WildGuardTest, HarmBench, XSTest and DAN, judged by
the WildGuard classifier.

The harness sets vLLM's tensor parallelism from the number of visible GPUs, so CUDA_VISIBLE_DEVICES
is always set explicitly; it insists on an OpenAI key even when no OpenAI judge runs, so a
placeholder is passed. Every model is prompted with the llama3 chat template, as the reference does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mergebench.errors import MergeBenchError
from mergebench.evaluation.adapters.invocation import OFFLINE_ENV, HarnessRun
from mergebench.evaluation.parsers.safety import parse_safety
from mergebench.evaluation.records import ResultRecord

IMAGE = "safety"
TASKS = ("wildguardtest", "harmbench", "xstest", "do_anything_now")
HARNESS_DIR = "/opt/safety-eval"
OPENAI_PLACEHOLDER = "not-used-by-mergebench"


@dataclass(frozen=True)
class SafetySettings:
    template: str = "llama3"
    use_vllm: bool = True
    gpus: tuple[int, ...] = (0,)
    batch_size: int | None = None


def runs(model: str, out_dir: str | Path, settings: SafetySettings = SafetySettings(),
         tasks: tuple[str, ...] = TASKS) -> list[HarnessRun]:
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise MergeBenchError(f"safety-eval task {unknown[0]!r}: expected some of {', '.join(TASKS)}")
    if not settings.gpus:
        raise MergeBenchError("safety-eval needs at least one GPU (it generates with vLLM)")
    out_root = Path(out_dir) / "safety"
    argv = ["python", "evaluation/eval.py", "generators", "--model_name_or_path", model,
            "--model_input_template_path_or_name", settings.template, "--tasks", ",".join(tasks),
            "--report_output_path", str(out_root / "safety_eval.json"),
            "--save_individual_results_path", str(out_root / "all.json")]
    if settings.use_vllm:
        argv.append("--use_vllm")
    if settings.batch_size is not None:
        argv += ["--batch_size", str(settings.batch_size)]
    env = {**OFFLINE_ENV, "CUDA_VISIBLE_DEVICES": ",".join(map(str, settings.gpus)),
           "OPENAI_API_KEY": OPENAI_PLACEHOLDER}
    return [HarnessRun("safety", "safety-generators", IMAGE, tuple(argv), str(out_root), env,
                       gpus=len(settings.gpus), workdir=HARNESS_DIR)]


def parse(out_dir: str | Path, model_label: str) -> ResultRecord:
    path = Path(out_dir) / "safety" / "safety_eval.json"
    if not path.is_file():
        raise MergeBenchError(f"{path}: safety-eval wrote no report for {model_label} (see its log)")
    return parse_safety(path, model=model_label)
