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
from mergebench.evaluation.adapters.invocation import OFFLINE_ENV, HarnessRun, hub_error, known_tasks
from mergebench.evaluation.parsers.safety import parse_safety
from mergebench.evaluation.records import ResultRecord

IMAGE = "safety"
TASKS = ("wildguardtest", "harmbench", "xstest", "do_anything_now")
#: The judge every task's generations are classified by (gated), fetched by the plan's fetch/safety stage.
JUDGE = "allenai/wildguard"
#: Hub datasets safety-eval's tasks read: WildGuardTest is a config of the gated WildGuardMix; HarmBench's,
#: XSTest's and DAN's prompts ship inside safety-eval's own source tree (not verified here: that source
#: could not be had; docs/rehearsal.md).
TASK_DATASETS: dict[str, tuple[str, str] | None] = {"wildguardtest": ("allenai/wildguardmix", "wildguardtest"),
                                                    "harmbench": None, "xstest": None, "do_anything_now": None}
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
    known_tasks("safety-eval", tasks, TASKS)
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


def fetch_params(tasks: tuple[str, ...]) -> dict:
    """What the plan's fetch/safety stage brings for `tasks`: their hub datasets and the judge."""
    return {"datasets": sorted({f"{r}:{c}" for r, c in filter(None, (TASK_DATASETS[t] for t in tasks))}),
            "models": [JUDGE]}


def parse(out_dir: str | Path, model_label: str) -> ResultRecord:
    path = Path(out_dir) / "safety" / "safety_eval.json"
    if not path.is_file():
        raise MergeBenchError(f"{path}: safety-eval wrote no report for {model_label} (see its log)")
    return parse_safety(path, model=model_label)


def prepare(tasks: tuple[str, ...], out: Path, say=print) -> dict:
    """With the hub reachable: the WildGuard judge into the hub cache and each task's hub dataset prepared
    by this environment's `datasets` (the safety image's). Runs in the safety image, with HF_TOKEN."""
    import os

    import datasets
    from huggingface_hub import snapshot_download

    token = os.environ.get("HF_TOKEN")
    say(f"[fetch] safety judge: {JUDGE}")
    try:
        snapshot_download(JUDGE, token=token)
    except Exception as e:  # noqa: BLE001 - one line naming the repo
        raise MergeBenchError(f"fetch {JUDGE}: {hub_error(e)}") from None
    for task in tasks:
        ref = TASK_DATASETS[task]
        if ref is None:
            continue
        say(f"[fetch] safety {task}: {ref[0]} ({ref[1]})")
        try:
            datasets.load_dataset(*ref, token=token)
        except Exception as e:  # noqa: BLE001
            raise MergeBenchError(f"fetch {ref[0]} for safety task {task}: {hub_error(e)}") from None
    return {"tasks": list(tasks), "judge": JUDGE}
