"""One SFT loop for every scale: seeded, deterministic, resumable, atomic.

The loop is deliberately plain (AdamW, warmup + schedule, gradient accumulation to a global batch,
grad clipping, optional bf16 autocast) so that its behaviour is obvious and the tiny family exercises
exactly the code the real recipe runs. Distributed backends plug in at `_backend`: the paper trains
with DeepSpeed ZeRO-3, which the train image provides; this venv has no DeepSpeed, so "native" (one
process, one device) is the only backend implemented here.

Output is written to `.<name>.tmp` next to the destination and renamed when the model, tokenizer and
manifest.json are all in place; a checkpoint inside the temporary directory lets an interrupted run
resume where it stopped and finish bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mergebench.errors import MergeBenchError
from mergebench.finetune.data import IGNORE, Example, encode, pack, pad_batch
from mergebench.finetune.recipe import Recipe

ProgressFn = Callable[[int, int, float], None]  # (step, total_steps, loss)
CHECKPOINT = "checkpoint"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
MANIFEST = "manifest.json"


@dataclass
class TrainResult:
    out: Path
    steps: int
    final_loss: float
    resumed_from: int


def rows_digest(rows: list[dict]) -> str:
    """A hash of the training rows, so a manifest says exactly what data made the model."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r["prompt"], r["response"]]).encode())
    return h.hexdigest()


def is_complete(out: Path) -> bool:
    """A model directory exists, as far as the kit is concerned, once its manifest is written."""
    return (Path(out) / MANIFEST).is_file()


@contextlib.contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """Deterministic kernels and a fixed thread count for the duration of a run, then restore."""
    old_det, old_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


def _backend(recipe: Recipe) -> None:
    if recipe.backend == "deepspeed":
        raise MergeBenchError("recipe backend='deepspeed': ZeRO-3 training runs in the train image; this "
                              "environment has no DeepSpeed, use backend='native'")


def _schedule(optimizer, recipe: Recipe, total: int):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[recipe.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=math.ceil(recipe.warmup_ratio * total),
                         num_training_steps=total)


def plan_steps(n_sequences: int, recipe: Recipe) -> tuple[int, int]:
    """(optimizer steps per epoch, total steps): full global batches only, so every step is alike."""
    per_epoch = max(1, n_sequences // recipe.global_batch)
    total = max(1, math.ceil(recipe.epochs * per_epoch))
    return per_epoch, (min(total, recipe.max_steps) if recipe.max_steps else total)


def _batch_indices(step: int, per_epoch: int, n: int, recipe: Recipe) -> list[int]:
    epoch, i = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=gen)
    return order[i * recipe.global_batch:(i + 1) * recipe.global_batch].tolist()


def _loss_sum(model, batch: dict[str, torch.Tensor], bf16: bool, device: torch.device) -> torch.Tensor:
    batch = {k: v.to(device) for k, v in batch.items()}
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=IGNORE, reduction="sum")


def _save_checkpoint(tmp: Path, step: int, model, optimizer, scheduler, run_key: str) -> None:
    staging = tmp / f"{CHECKPOINT}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    torch.save({"step": step, "run": run_key, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, staging / "state.pt")
    final = tmp / CHECKPOINT
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)


def _load_checkpoint(tmp: Path, model, optimizer, scheduler, run_key: str) -> int:
    path = tmp / CHECKPOINT / "state.pt"
    if not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("run") != run_key:  # leftovers of another run (recipe, data or start): start over
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])


def _new_model(init: Any, seed: int):
    """`init` is a directory to finetune from, or a config to initialise from scratch with `seed`."""
    from transformers import AutoModelForCausalLM, PretrainedConfig

    if isinstance(init, PretrainedConfig):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(init, dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(str(init), dtype=torch.float32)


def finetune(init: Any, tokenizer, rows: list[dict], recipe: Recipe, out: Path, *, init_label: str = "",
             device: str = "cpu", progress: ProgressFn | None = None, halt_after: int | None = None,
             extra_manifest: dict[str, Any] | None = None) -> TrainResult:
    """Finetune `init` on `rows` with `recipe` and save a Hugging Face directory at `out`.

    `halt_after` stops after that many optimizer steps, leaving a checkpoint (how tests simulate a
    preempted job). The manifest records the recipe, seed, data hash and starting point, never paths
    or times, so two builds of the same thing are byte-identical.
    """
    _backend(recipe)
    out = Path(out)
    if is_complete(out):
        raise MergeBenchError(f"{out}: already complete (has {MANIFEST}); remove it to train again")
    tmp = out.parent / f".{out.name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    with deterministic(recipe.threads):
        examples = [encode(tokenizer, r["prompt"], r["response"], recipe.seq_len, recipe.template) for r in rows]
        if recipe.packing:
            examples = pack(examples, recipe.seq_len, tokenizer.pad_token_id)
        if len(examples) < recipe.global_batch:
            raise MergeBenchError(f"{out.name}: {len(examples)} training sequences are fewer than one global "
                                  f"batch ({recipe.global_batch}); lower global_batch")
        per_epoch, total = plan_steps(len(examples), recipe)
        model = _new_model(init, recipe.seed).to(dev)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
                                      betas=(recipe.adam_beta1, recipe.adam_beta2), eps=recipe.adam_eps)
        scheduler = _schedule(optimizer, recipe, total)
        run_key = json.dumps([recipe.key(), rows_digest(rows), init_label])
        start = _load_checkpoint(tmp, model, optimizer, scheduler, run_key)
        loss_value = float("nan")
        for step in range(start, total):
            if halt_after is not None and step >= halt_after:
                _save_checkpoint(tmp, step, model, optimizer, scheduler, run_key)
                return TrainResult(tmp, step, loss_value, start)
            loss_value = _step(model, optimizer, scheduler, examples, step, per_epoch, recipe,
                               tokenizer.pad_token_id, dev)
            if progress:
                progress(step + 1, total, loss_value)
            if recipe.save_every and (step + 1) % recipe.save_every == 0 and step + 1 < total:
                _save_checkpoint(tmp, step + 1, model, optimizer, scheduler, run_key)
        _write_model(model, tokenizer, tmp, out, {
            "kind": "sft", "init": init_label, "seed": recipe.seed, "recipe": recipe.to_dict(),
            "train_rows": len(rows), "train_sha256": rows_digest(rows), "steps": total,
            "final_loss": round(loss_value, 6), **(extra_manifest or {}),
        })
    return TrainResult(out, total, loss_value, start)


def _step(model, optimizer, scheduler, examples: list[Example], step: int, per_epoch: int, recipe: Recipe,
          pad_id: int, dev: torch.device) -> float:
    idx = _batch_indices(step, per_epoch, len(examples), recipe)
    chosen = [examples[i] for i in idx]
    n_tokens = sum(sum(1 for t in e.labels[1:] if t != IGNORE) for e in chosen)
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for k in range(0, len(chosen), recipe.micro_batch):
        loss = _loss_sum(model, pad_batch(chosen[k:k + recipe.micro_batch], pad_id), recipe.bf16, dev)
        (loss / max(n_tokens, 1)).backward()
        total += loss.item()
    if recipe.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
    optimizer.step()
    scheduler.step()
    return total / max(n_tokens, 1)


def _write_model(model, tokenizer, tmp: Path, out: Path, manifest: dict[str, Any]) -> None:
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(tmp))
    source = Path(getattr(tokenizer, "name_or_path", "") or ".")
    files = [source / f for f in TOKENIZER_FILES if (source / f).is_file()]
    if (source / "tokenizer.json").is_file():
        # The tokenizer's own files, byte for byte: save_pretrained would rewrite tokenizer_config.json
        # for this transformers version (transformers 5 names a class that 4.x cannot load).
        for f in files:
            shutil.copyfile(f, tmp / f.name)
    else:
        tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(tmp / CHECKPOINT, ignore_errors=True)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if out.exists():  # an incomplete leftover without a manifest
        shutil.rmtree(out)
    os.replace(tmp, out)
