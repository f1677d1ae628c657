"""lm-evaluation-harness: MergeBench's math, multilingual and instruction-following tasks.

One `lm_eval` process per group of tasks that share a few-shot setting: gsm8k_cot keeps its task
default (8-shot), the multilingual tasks and IFEval run 0-shot; all greedy. `hf` is the faithful
backend; `vllm` is the fast mode, recorded as such in every result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mergebench.errors import MergeBenchError
from mergebench.evaluation.adapters.invocation import OFFLINE_ENV, HarnessRun, hub_error, known_tasks
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
TASKS = tuple(t for tasks, _ in GROUPS.values() for t in tasks)
#: The hub dataset (repo, config) each task reads, as lm-eval's task configs name them (a test checks them
#: against the installed lm-eval): what the plan's fetch/lmeval stage prepares.
TASK_DATASETS: dict[str, tuple[str, str | None]] = {
    "gsm8k_cot": ("openai/gsm8k", "main"), "ifeval": ("google/IFEval", None),
    **{f"{task}_{lang}": (f"alexandrainst/{repo}", lang) for task, repo in
       (("m_mmlu", "m_mmlu"), ("arc", "m_arc"), ("hellaswag", "m_hellaswag")) for lang in LANGS},
}
#: NLTK data IFEval's checks load (sentence splitting).
NLTK_PACKAGES = ("punkt_tab",)
NLTK_INDEX = "https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/index.xml"


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
    device: str | None = None  # None: lm-eval's own choice (the GPU); "cpu" for CPU rehearsals
    #: lm-eval --gen_kwargs overrides (e.g. "max_gen_toks=32" in the CI slice); None: the tasks' own
    gen_kwargs: str | None = None

    def __post_init__(self):
        if self.backend not in ("hf", "vllm"):
            raise MergeBenchError(f"lm-eval backend {self.backend!r}: expected hf or vllm")


def model_args(model: str, s: LmEvalSettings) -> str:
    args = [f"pretrained={model}", f"dtype={s.dtype}"]
    if s.backend == "vllm":
        args += [f"gpu_memory_utilization={s.gpu_memory_utilization}", f"max_model_len={s.max_model_len}",
                 "tensor_parallel_size=1"]
    return ",".join(args)


def batch_size(s: LmEvalSettings) -> str:
    """MergeBench's "auto", except on the CPU, where lm-eval's search for the largest batch that fits
    tries batches of the full context length for minutes: there one sequence at a time."""
    return "1" if s.device == "cpu" and s.batch_size == "auto" else s.batch_size


def check_tasks(tasks) -> tuple[str, ...]:
    return known_tasks("lm-eval", tasks, TASKS)


def fetch_params(tasks: tuple[str, ...]) -> dict:
    """What the plan's fetch/lmeval stage brings for `tasks` (shown by `mergebench plan`)."""
    refs = [TASK_DATASETS[t] for t in tasks]
    return {"datasets": sorted({f"{r}:{c}" if c else r for r, c in refs}), "nltk": list(NLTK_PACKAGES)}


def runs(model: str, out_dir: str | Path, settings: LmEvalSettings = LmEvalSettings(),
         groups: tuple[str, ...] = tuple(GROUPS), tasks: tuple[str, ...] | None = None) -> list[HarnessRun]:
    """The lm_eval invocations for `model` (a directory visible inside the image), one per group;
    `tasks` keeps only some of MergeBench's tasks (a slice), in their groups' settings."""
    keep = check_tasks(tasks) if tasks is not None else TASKS
    out = []
    for group in groups:
        if group not in GROUPS:
            raise MergeBenchError(f"lm-eval task group {group!r}: expected one of {', '.join(GROUPS)}")
        tasks_of, shots = GROUPS[group]
        tasks = tuple(t for t in tasks_of if t in keep)
        if not tasks:
            continue
        run_dir = str(Path(out_dir) / "lmeval" / group)
        argv = ["lm_eval", "--model", settings.backend, "--model_args", model_args(model, settings),
                "--tasks", ",".join(tasks), "--batch_size", batch_size(settings),
                "--seed", str(settings.seed), "--output_path", run_dir]
        if shots is not None:
            argv += ["--num_fewshot", str(shots)]
        if settings.log_samples:
            argv.append("--log_samples")
        if settings.limit is not None:
            argv += ["--limit", str(settings.limit)]
        if settings.device is not None:
            argv += ["--device", settings.device]
        if settings.gen_kwargs:
            argv += ["--gen_kwargs", settings.gen_kwargs]
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


def prepare(tasks: tuple[str, ...], out: Path, say=print) -> dict:
    """With the hub reachable: NLTK's punkt_tab into `out/nltk_data`, then each task built by lm-eval
    itself, which downloads its dataset with this environment's `datasets` into HF_DATASETS_CACHE, the
    form that same `datasets` finds again with the hub offline. Runs in the lmeval image."""
    import os

    nltk_dir = out / "nltk_data"
    os.environ["NLTK_DATA"] = str(nltk_dir)  # before nltk is imported: lm-eval's ifeval looks there
    index = os.environ.get("MERGEBENCH_NLTK_INDEX") or NLTK_INDEX
    for package in NLTK_PACKAGES:
        say(f"[fetch] nltk {package} from {index}")
        fetch_nltk_package(index, package, nltk_dir)
    import nltk

    nltk.data.path.insert(0, str(nltk_dir))
    from lm_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager()
    for task in check_tasks(tasks):
        repo, config = TASK_DATASETS[task]
        say(f"[fetch] lm-eval {task}: {repo}" + (f" ({config})" if config else ""))
        try:
            get_task_dict([task], manager)
        except Exception as e:  # noqa: BLE001 - datasets and the hub raise many kinds; one line names the repo
            raise MergeBenchError(f"fetch {repo} for lm-eval task {task}: {hub_error(e)}") from None
    return {"nltk_data": str(nltk_dir), "tasks": list(tasks)}


def fetch_nltk_package(index_url: str, package: str, nltk_dir: Path) -> Path:
    """One package of an NLTK data index (the index.xml format NLTK's own downloader reads: id, url, subdir,
    md5 checksum), unpacked into `nltk_dir/<subdir>/`. The kit's own client, because NLTK's refuses any
    server on a private address, which is where a mirror (or the rehearsal's hub double) is."""
    import hashlib
    import io
    import urllib.request
    import zipfile
    from xml.etree import ElementTree

    def get(url: str) -> bytes:
        try:
            with urllib.request.urlopen(url, timeout=60) as reply:  # noqa: S310 - the index the user chose
                return reply.read()
        except OSError as e:
            raise MergeBenchError(f"fetch nltk {package}: cannot read {url} ({e})") from None

    try:
        entry = ElementTree.fromstring(get(index_url)).find(f"./packages/package[@id='{package}']")
    except ElementTree.ParseError:
        raise MergeBenchError(f"fetch nltk {package}: {index_url} is not an NLTK index (not XML)") from None
    if entry is None:
        raise MergeBenchError(f"fetch nltk {package}: {index_url} lists no package {package!r}")
    data = get(entry.get("url", ""))
    checksum = entry.get("checksum")
    if checksum and hashlib.md5(data).hexdigest() != checksum:  # noqa: S324 - the checksum the index carries
        raise MergeBenchError(f"fetch nltk {package}: {entry.get('url')} does not match the index's checksum")
    target = nltk_dir / entry.get("subdir", "")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            if name.startswith("/") or ".." in Path(name).parts:
                raise MergeBenchError(f"fetch nltk {package}: the archive holds a path outside its folder ({name})")
        archive.extractall(target)
    return target / package
