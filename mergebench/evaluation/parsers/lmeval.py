"""Parser for lm-evaluation-harness results (`lm_eval --output_path` results_*.json, and MergeBench's lm_eval.json).

The published lm_eval.json is lm-eval 0.4.x's own aggregated results file, so one parser reads both.
lm-eval keys metrics as "<metric>,<filter>" ("exact_match,flexible-extract") and standard errors as
"<metric>_stderr,<filter>"; the parser keeps metric keys verbatim and moves standard errors aside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mergebench.evaluation.parsers.common import (
    ResultParseError,
    as_metric,
    default_label,
    load_json_object,
    require_metrics,
    section,
)
from mergebench.evaluation.records import ResultRecord

HARNESS = "lmeval"

#: Keys of lm-eval's "config" section worth keeping: they change the numbers (seeds, limits, batching).
#: ("model" there is the backend, e.g. "vllm", and goes to ResultRecord.backend instead.)
_RUN_SETTINGS = (
    "model_args",
    "batch_size",
    "device",
    "limit",
    "gen_kwargs",
    "bootstrap_iters",
    "random_seed",
    "numpy_seed",
    "torch_seed",
    "fewshot_seed",
)
#: Top-level provenance keys kept as they are.
_PROVENANCE = (
    "model_name",
    "transformers_version",
    "date",
    "total_evaluation_time_seconds",
    "fewshot_as_multiturn",
    "chat_template_sha",
    "system_instruction_sha",
)


def _split_stderr(key: str) -> str | None:
    """The metric key a standard-error key belongs to ("acc_stderr,none" -> "acc,none"), else None."""
    name, comma, filt = key.partition(",")
    if not name.endswith("_stderr"):
        return None
    return name[: -len("_stderr")] + comma + filt


def _task_entry(path: Path, task: str, entry: Any) -> tuple[dict[str, float], dict[str, float]]:
    if not isinstance(entry, dict):
        raise ResultParseError(
            path, f"results of task {task!r} are a JSON {type(entry).__name__}, expected an object"
        )
    metrics: dict[str, float] = {}
    stderr: dict[str, float] = {}
    for key, value in entry.items():
        if key == "alias":
            continue
        number = as_metric(value)
        parent = _split_stderr(key)
        if parent is not None:
            if number is not None:  # lm-eval writes "N/A" where it could not estimate one
                stderr[parent] = number
        elif number is not None:
            metrics[key] = number
    require_metrics(path, task, metrics, entry)
    return metrics, stderr


def _model_path(config: dict[str, Any], data: dict[str, Any]) -> str | None:
    """What lm-eval was pointed at: `pretrained=` in model_args (string or dict), else model_name."""
    args = config.get("model_args")
    if isinstance(args, dict) and isinstance(args.get("pretrained"), str):
        return args["pretrained"]
    if isinstance(args, str):
        for part in args.split(","):
            name, _, value = part.partition("=")
            if name.strip() == "pretrained" and value:
                return value.strip()
    name = data.get("model_name")
    return name if isinstance(name, str) else None


def parse_lmeval(path: str | Path, model: str | None = None) -> ResultRecord:
    """Read one lm-eval results file into a record; `model` labels it (default: its folder's name)."""
    path = Path(path)
    data = load_json_object(path)
    results = section(path, data, "results")
    if not results:
        raise ResultParseError(path, "section 'results' is empty: the run reported no task")
    metrics: dict[str, dict[str, float]] = {}
    stderr: dict[str, dict[str, float]] = {}
    for task, entry in results.items():
        metrics[task], task_stderr = _task_entry(path, task, entry)
        if task_stderr:
            stderr[task] = task_stderr

    run = section(path, data, "config", required=False)
    config: dict[str, Any] = {key: run[key] for key in _RUN_SETTINGS if key in run}
    config.update({key: data[key] for key in _PROVENANCE if key in data})
    for raw_key, key in (("n-shot", "n_shot"), ("versions", "task_versions"), ("n-samples", "n_samples")):
        if isinstance(data.get(raw_key), dict):
            config[key] = data[raw_key]
    groups = data.get("group_subtasks")
    if isinstance(groups, dict):
        config["groups"] = {name: subtasks for name, subtasks in groups.items() if subtasks}
    model_path = _model_path(run, data)
    if model_path is not None:
        config["model_path"] = model_path

    backend = run.get("model") if isinstance(run.get("model"), str) else data.get("model_source")
    version = data.get("lm_eval_version")
    commit = data.get("git_hash")
    return ResultRecord(
        model=model or default_label(path),
        harness=HARNESS,
        metrics=metrics,
        stderr=stderr,
        harness_version=version if isinstance(version, str) else None,
        harness_commit=commit if isinstance(commit, str) else None,
        backend=backend if isinstance(backend, str) else None,
        sources=[str(path)],
        config=config,
    )
