"""Evaluate models on the tiny suite through lm-eval's Python API, all models in one process.

Building lm-eval's TaskManager without its built-in tasks saves seconds per call; the model is
loaded once per model through the `hf` backend on CPU, exactly as a harness run would.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

from mergebench.errors import MergeBenchError
from mergebench.evaluation.records import ResultRecord
from mergebench.evaluation.tiny_suite import TASKS, write_tasks


def _record(label: str, results: dict, tasks: tuple[str, ...], source: str) -> ResultRecord:
    metrics: dict[str, dict[str, float]] = {}
    stderr: dict[str, dict[str, float]] = {}
    for task in tasks:
        entry = results["results"].get(task)
        if entry is None:
            raise MergeBenchError(f"lm-eval returned no results for task {task} of model {label}")
        metrics[task] = {k: float(v) for k, v in entry.items()
                         if "_stderr" not in k and isinstance(v, int | float)}
        stderr[task] = {k.replace("_stderr", ""): float(v) for k, v in entry.items()
                        if "_stderr" in k and isinstance(v, int | float)}
    import lm_eval

    return ResultRecord(label, "lmeval", metrics, stderr, harness_version=lm_eval.__version__, backend="hf",
                        sources=[source], config={"suite": "tiny", "n-shot": results.get("n-shot", {}),
                                                  "versions": results.get("versions", {})})


_MANAGERS: dict[tuple[str, str], tuple[tempfile.TemporaryDirectory, object]] = {}


def _task_manager(data_dir: Path, split: str):
    """One TaskManager per (family, split) and process: a batch of evaluations builds it once."""
    from lm_eval.tasks import TaskManager

    key = (str(Path(data_dir).resolve()), split)
    if key not in _MANAGERS:
        tmp = tempfile.TemporaryDirectory(prefix="mergebench-tiny-tasks-")
        manager = TaskManager(include_path=str(write_tasks(Path(data_dir), Path(tmp.name), split)),
                              include_defaults=False)
        _MANAGERS[key] = (tmp, manager)
    return _MANAGERS[key][1]


def evaluate_tiny(models: dict[str, Path], data_dir: Path, out_dir: Path, tasks: tuple[str, ...] = TASKS,
                  limit: int | None = None, split: str = "test", batch_size: int = 64,
                  progress=None) -> dict[str, ResultRecord]:
    """Run the tiny suite on each model; writes <out_dir>/<label>/results.json (lm-eval's output)."""
    from lm_eval import simple_evaluate

    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise MergeBenchError(f"tiny suite has no task {unknown[0]!r} (known: {', '.join(TASKS)})")
    if not (Path(data_dir) / "math" / f"{split}.jsonl").is_file():
        raise MergeBenchError(f"{data_dir}: not a tiny family data folder (no math/{split}.jsonl)")
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    records = {}
    manager = _task_manager(Path(data_dir), split)
    for i, (label, path) in enumerate(models.items()):
        if not (Path(path) / "config.json").is_file():
            raise MergeBenchError(f"model {label}: {path} is not a model directory (no config.json)")
        start = time.time()
        try:
            results = simple_evaluate(model="hf", model_args={"pretrained": str(path), "dtype": "float32",
                                                               "add_bos_token": True},
                                      tasks=list(tasks), task_manager=manager, batch_size=batch_size,
                                      device="cpu", limit=limit, log_samples=False, random_seed=0,
                                      numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
        except Exception as e:  # noqa: BLE001 - name model, harness and cause in one line
            raise MergeBenchError(f"lm-eval failed on model {label} ({path}): {type(e).__name__}: {e}") from None
        target = Path(out_dir) / label
        target.mkdir(parents=True, exist_ok=True)
        keep = {k: results[k] for k in ("results", "versions", "n-shot", "config") if k in results}
        (target / "results.json").write_text(json.dumps(keep, indent=2, default=str) + "\n")
        records[label] = _record(label, results, tasks, str(target / "results.json"))
        if progress:
            progress(label, i + 1, len(models), time.time() - start)
    return records
