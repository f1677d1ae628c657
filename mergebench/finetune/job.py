"""A finetuning job of a real MergeBench family: base from the HF cache, data from `sources`, one recipe.

`run_job` is the same on every path: in-process for the native backend (one GPU, or the CPU), and on
every rank of a torchrun launch for DeepSpeed ZeRO-3 (`mergebench.finetune.worker`). For a launch the
kit writes, before starting anything, `launch/job.json` and `launch/deepspeed.json` into the model's
temporary directory; they end up inside the finished model directory, next to its manifest.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergebench.finetune.distributed import BatchPlan, deepspeed_config, launch_argv, plan_batches
from mergebench.finetune.recipe import Recipe
from mergebench.finetune.sources import load_training_rows, source
from mergebench.hubdata import open_dataset

LAUNCH_DIR = "launch"


@dataclass(frozen=True)
class Job:
    """Everything a rank needs; written as JSON so the launcher and every rank read the same values."""

    #: The base to finetune: a hub id resolved through the HF cache, or a local directory.
    base: str
    #: A domain (its specialist) or "multitask".
    name: str
    #: The model directory to write.
    out: str
    recipe: dict[str, Any]
    world: int = 1
    #: The ZeRO-3 config file the launcher wrote (deepspeed backend only).
    deepspeed_config: str | None = None

    def get_recipe(self) -> Recipe:
        return Recipe(**self.recipe)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> Job:
        return cls(**json.loads(Path(path).read_text()))


def launch_dir(out: Path) -> Path:
    """Where the launch files go: inside the temporary directory that becomes the model directory."""
    out = Path(out)
    return out.parent / f".{out.name}.tmp" / LAUNCH_DIR


def hidden_size(model_dir: Path | None) -> int | None:
    if model_dir is None or not (Path(model_dir) / "config.json").is_file():
        return None
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return cfg.get("hidden_size") or cfg.get("text_config", {}).get("hidden_size")


@dataclass(frozen=True)
class Launch:
    job: Job
    plan: BatchPlan
    #: The ZeRO-3 config (deepspeed backend) and the command that starts one worker per GPU.
    config: dict[str, Any] | None
    argv: list[str] | None
    #: Environment the launch adds (CUDA_VISIBLE_DEVICES when --gpus named device ids).
    env: dict[str, str]

    def describe(self) -> dict[str, Any]:
        recipe = self.job.get_recipe()
        return {"base": self.job.base, "name": self.job.name, "out": self.job.out, "backend": recipe.backend,
                "batch": self.plan.to_dict(), "recipe": recipe.to_dict(),
                "datasets": [dataset_entry(d, recipe) for d in domains_of(self.job.name)],
                "deepspeed_config": self.config, "launch": self.argv, "env": self.env}

    def write(self) -> None:
        """Write job.json (and deepspeed.json) where the launch expects them."""
        d = launch_dir(Path(self.job.out))
        d.mkdir(parents=True, exist_ok=True)
        if self.config is not None:
            Path(self.job.deepspeed_config).write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
        self.job.save(d / "job.json")


def domains_of(name: str) -> tuple[str, ...]:
    from mergebench.catalog.domains import DOMAIN_NAMES

    return DOMAIN_NAMES if name == "multitask" else (name,)


def dataset_entry(domain: str, recipe: Recipe) -> dict[str, Any]:
    ref = source(domain, recipe).dataset
    return {"domain": domain, "repo": ref.repo, "config": ref.config, "split": ref.split, "gated": ref.gated,
            "fetch": ref.fetch_hint().removeprefix("fetch it with ")}


def plan_launch(base: str, name: str, out: Path, recipe: Recipe, world: int, model_dir: Path | None,
                visible_devices: str | None = None) -> Launch:
    """The job, its batch split and, for DeepSpeed, the ZeRO-3 config and exact launch command."""
    plan = plan_batches(recipe, world)
    out = Path(out).absolute()  # every rank reads the same path, whatever its working directory
    if recipe.backend != "deepspeed":
        return Launch(Job(base, name, str(out), recipe.to_dict()), plan, None, None, {})
    d = launch_dir(out)
    job = Job(base, name, str(out), recipe.to_dict(), world, str(d / "deepspeed.json"))
    env = {"CUDA_VISIBLE_DEVICES": visible_devices} if visible_devices else {}
    return Launch(job, plan, deepspeed_config(recipe, plan, hidden_size(model_dir)), launch_argv(d / "job.json", world),
                  env)


def check_data(name: str, recipe: Recipe) -> None:
    """Open each training set once before any rank starts: a missing one fails here, in one line, and the
    Arrow files are prepared once instead of by every rank at the same time."""
    for domain in domains_of(name):
        open_dataset(source(domain, recipe).dataset, what=f"{domain} training set")


def run_job(job: Job, progress=None):
    """Load data, tokenizer and base (offline), then finetune; on every rank under DeepSpeed."""
    import torch
    from transformers import AutoTokenizer

    from mergebench.finetune.trainer import finetune
    from mergebench.merging.io.checkpoint import resolve_model_path

    recipe = job.get_recipe()
    rows, infos = load_training_rows(job.name, recipe)
    init = resolve_model_path(job.base)
    tokenizer = AutoTokenizer.from_pretrained(str(init))
    config = json.loads(Path(job.deepspeed_config).read_text()) if job.deepspeed_config else None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return finetune(init, tokenizer, rows, recipe, Path(job.out), init_label=job.base, device=device,
                    progress=progress, ds_config=config,
                    extra_manifest={"model": job.name, "data": infos, "world": job.world})


def is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def progress_printer(name: str, echo=print, every: int = 10):
    """A progress callback that prints the first, every `every`-th and the last step, on rank 0 only."""

    def progress(step: int, total: int, loss: float) -> None:
        if is_main_rank() and (step == 1 or step % every == 0 or step == total):
            echo(f"[finetune {name}] step {step}/{total} loss {loss:.4f}")

    return progress
