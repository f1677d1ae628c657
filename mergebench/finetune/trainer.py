"""One SFT loop for every scale: seeded, deterministic, resumable, atomic.

The loop is deliberately plain (AdamW, warmup + schedule, gradient accumulation to a global batch,
grad clipping, optional bf16 autocast) so that its behaviour is obvious and the tiny family exercises
exactly the code the real recipe runs. A backend owns model, optimizer, backward and checkpoints:
`NativeBackend` is one process on one device; `DeepSpeedBackend` is one process per GPU of a node
(started by torchrun, see distributed.py) with DeepSpeed ZeRO-3 partitioning parameters, gradients
and optimizer state, as the paper trains. Both draw the same global batches and normalise the loss by
the same token count, so they optimize the same objective (tested: two ZeRO-3 ranks on CPU match the
native loop).

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
from mergebench.finetune.data import encode, pack
from mergebench.finetune.distributed import BatchPlan, plan_batches
from mergebench.finetune.recipe import Recipe
from mergebench.tokens import IGNORE, Example, pad_batch, pad_token_id, response_nll

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
    return response_nll(logits, batch["labels"], reduction="sum")


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


def _new_model(init: Any, seed: int, dtype: torch.dtype = torch.float32):
    """`init` is a directory to finetune from, or a config to initialise from scratch with `seed`."""
    from transformers import AutoModelForCausalLM, PretrainedConfig

    if isinstance(init, PretrainedConfig):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(init, dtype=dtype)
    return AutoModelForCausalLM.from_pretrained(str(init), dtype=dtype)


def _adamw(model, r: Recipe) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=r.weight_decay,
                             betas=(r.adam_beta1, r.adam_beta2), eps=r.adam_eps)


class NativeBackend:
    """One process, one device: torch AdamW, clipping and the schedule, stepped by hand."""

    rank, world = 0, 1

    def __init__(self, recipe: Recipe, device: str):
        self.recipe = recipe
        self.device = torch.device(device)
        self.autocast = recipe.bf16

    def prepare(self, init: Any, total: int, plan: BatchPlan) -> None:
        r = self.recipe
        self.model = _new_model(init, r.seed).to(self.device)
        if r.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.model.train()
        self.optimizer = _adamw(self.model, r)
        self.scheduler = _schedule(self.optimizer, r, total)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, n_tokens: int) -> None:
        (loss / max(n_tokens, 1)).backward()

    def step(self) -> None:
        if self.recipe.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
        self.optimizer.step()
        self.scheduler.step()

    def total(self, value: float) -> float:
        return value

    def save_checkpoint(self, tmp: Path, step: int, run_key: str) -> None:
        _save_checkpoint(tmp, step, self.model, self.optimizer, self.scheduler, run_key)

    def load_checkpoint(self, tmp: Path, run_key: str) -> int:
        return _load_checkpoint(tmp, self.model, self.optimizer, self.scheduler, run_key)

    def write_model(self, tokenizer, tmp: Path, out: Path, manifest: dict[str, Any]) -> None:
        # bf16 training keeps fp32 master weights; the result is published in bf16, as MergeBench's are.
        model = self.model.to(torch.bfloat16) if self.recipe.bf16 else self.model
        _write_model(model, tokenizer, tmp, out, manifest)


class DeepSpeedBackend:
    """One process per GPU (torchrun's RANK/WORLD_SIZE/LOCAL_RANK) and DeepSpeed ZeRO-3.

    The kit's AdamW and schedule are handed to DeepSpeed, which partitions them with the parameters.
    `engine.backward` divides by the accumulation steps and ZeRO averages gradients over the ranks, so
    each micro batch's summed token loss is scaled by world × accum / tokens-in-the-global-batch: the
    same objective as the native loop's loss / tokens.
    """

    autocast = False  # DeepSpeed keeps the module itself in bf16 when bf16 is enabled

    def __init__(self, recipe: Recipe, config: dict[str, Any] | None):
        missing = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if k not in os.environ]
        if missing or config is None:
            raise MergeBenchError("recipe backend='deepspeed' runs one process per GPU: start it with "
                                  "`mergebench finetune --model <family> --deepspeed` (torchrun), not in-process")
        try:
            import deepspeed
        except ImportError:
            raise MergeBenchError("recipe backend='deepspeed' needs the deepspeed package (the train image has "
                                  "it; `pip install deepspeed`)") from None
        self.ds, self.recipe, self.config = deepspeed, recipe, config
        self.rank, self.world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        accelerator = deepspeed.get_accelerator()
        if accelerator.device_name() != "cpu":
            accelerator.set_device(int(os.environ["LOCAL_RANK"]))
        deepspeed.init_distributed(dist_backend=accelerator.communication_backend_name())
        self.device = torch.device(accelerator.current_device_name())
        from transformers.integrations import HfDeepSpeedConfig

        # Kept alive: while it exists, from_pretrained loads each rank's partition only (ZeRO-3 init).
        self._zero_init = HfDeepSpeedConfig(config)

    def prepare(self, init: Any, total: int, plan: BatchPlan) -> None:
        r = self.recipe
        if self.config["gradient_accumulation_steps"] != plan.accum or self.world != plan.world:
            raise MergeBenchError(f"DeepSpeed config is for {self.config['gradient_accumulation_steps']} "
                                  f"accumulation steps, this launch has {self.world} ranks × {plan.accum}")
        self.accum = plan.accum
        model = _new_model(init, r.seed, torch.bfloat16 if r.bf16 else torch.float32)
        if r.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        optimizer = _adamw(model, r)
        self.model, _, _, _ = self.ds.initialize(model=model, optimizer=optimizer, config=self.config,
                                                 lr_scheduler=lambda opt: _schedule(opt, r, total))
        self.model.train()

    def zero_grad(self) -> None:
        pass  # the engine clears gradients after each optimizer step

    def backward(self, loss: torch.Tensor, n_tokens: int) -> None:
        self.model.backward(loss * (self.world * self.accum / max(n_tokens, 1)))
        self.model.step()  # a real step only at the accumulation boundary

    def step(self) -> None:
        pass  # the last micro batch's engine.step() was the accumulation boundary: already stepped

    def total(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return float(t.item())

    def _barrier(self) -> None:
        torch.distributed.barrier()

    def save_checkpoint(self, tmp: Path, step: int, run_key: str) -> None:
        staging, final = tmp / f"{CHECKPOINT}.partial", tmp / CHECKPOINT
        if self.rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
        self._barrier()
        self.model.save_checkpoint(str(staging), tag="state", save_latest=False)
        self._barrier()
        if self.rank == 0:
            (staging / "meta.json").write_text(json.dumps({"step": step, "run": run_key}) + "\n")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
        self._barrier()

    def load_checkpoint(self, tmp: Path, run_key: str) -> int:
        meta = tmp / CHECKPOINT / "meta.json"
        if not meta.is_file():
            return 0
        state = json.loads(meta.read_text())
        if state.get("run") != run_key:  # leftovers of another run: start over
            return 0
        self.model.load_checkpoint(str(tmp / CHECKPOINT), tag="state")
        return int(state["step"])

    def write_model(self, tokenizer, tmp: Path, out: Path, manifest: dict[str, Any]) -> None:
        state = self.model._zero3_consolidated_16bit_state_dict()  # collective: every rank takes part
        if self.rank == 0:
            _write_model(self.model.module, tokenizer, tmp, out, manifest, state_dict=state)
        self._barrier()


def make_backend(recipe: Recipe, device: str, ds_config: dict[str, Any] | None = None):
    if recipe.backend == "deepspeed":
        return DeepSpeedBackend(recipe, ds_config)
    return NativeBackend(recipe, device)


def finetune(init: Any, tokenizer, rows: list[dict], recipe: Recipe, out: Path, *, init_label: str = "",
             device: str = "cpu", progress: ProgressFn | None = None, halt_after: int | None = None,
             extra_manifest: dict[str, Any] | None = None, ds_config: dict[str, Any] | None = None) -> TrainResult:
    """Finetune `init` on `rows` with `recipe` and save a Hugging Face directory at `out`.

    `halt_after` stops after that many optimizer steps, leaving a checkpoint (how tests simulate a
    preempted job). The manifest records the recipe, seed, data hash and starting point, never paths
    or times, so two builds of the same thing are byte-identical. With `recipe.backend="deepspeed"` this
    runs on every rank of a torchrun launch, with `ds_config` the ZeRO-3 config the launcher wrote.
    """
    backend = make_backend(recipe, device, ds_config)
    out = Path(out)
    if is_complete(out):
        raise MergeBenchError(f"{out}: already complete (has {MANIFEST}); remove it to train again")
    tmp = out.parent / f".{out.name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    with deterministic(recipe.threads):
        pad_id = pad_token_id(tokenizer)
        examples = [encode(tokenizer, r["prompt"], r["response"], recipe.seq_len, recipe.template) for r in rows]
        if recipe.packing:
            examples = pack(examples, recipe.seq_len, pad_id)
        if len(examples) < recipe.global_batch:
            raise MergeBenchError(f"{out.name}: {len(examples)} training sequences are fewer than one global "
                                  f"batch ({recipe.global_batch}); lower global_batch")
        plan = plan_batches(recipe, backend.world)
        per_epoch, total = plan_steps(len(examples), recipe)
        backend.prepare(init, total, plan)
        run_key = json.dumps([recipe.key(), rows_digest(rows), init_label])
        start = backend.load_checkpoint(tmp, run_key)
        loss_value = float("nan")
        for step in range(start, total):
            if halt_after is not None and step >= halt_after:
                backend.save_checkpoint(tmp, step, run_key)
                return TrainResult(tmp, step, loss_value, start)
            loss_value = _step(backend, examples, step, per_epoch, recipe, plan, pad_id)
            if progress:
                progress(step + 1, total, loss_value)
            if recipe.save_every and (step + 1) % recipe.save_every == 0 and step + 1 < total:
                backend.save_checkpoint(tmp, step + 1, run_key)
        backend.write_model(tokenizer, tmp, out, {
            "kind": "sft", "init": init_label, "seed": recipe.seed, "recipe": recipe.to_dict(),
            "train_rows": len(rows), "train_sha256": rows_digest(rows), "steps": total,
            "final_loss": round(loss_value, 6), **(extra_manifest or {}),
        })
    return TrainResult(out, total, loss_value, start)


def _step(backend, examples: list[Example], step: int, per_epoch: int, recipe: Recipe, plan: BatchPlan,
          pad_id: int) -> float:
    idx = _batch_indices(step, per_epoch, len(examples), recipe)
    chosen = [examples[i] for i in idx]
    n_tokens = sum(sum(1 for t in e.labels[1:] if t != IGNORE) for e in chosen)  # the whole global batch's
    mine = plan.shard(backend.rank, chosen)
    backend.zero_grad()
    total = 0.0
    for k in range(0, len(mine), plan.micro_batch):
        loss = _loss_sum(backend.model, pad_batch(mine[k:k + plan.micro_batch], pad_id), backend.autocast,
                         backend.device)
        backend.backward(loss, n_tokens)
        total += loss.item()
    backend.step()
    return backend.total(total) / max(n_tokens, 1)


def _write_model(model, tokenizer, tmp: Path, out: Path, manifest: dict[str, Any],
                 state_dict: dict[str, torch.Tensor] | None = None) -> None:
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = pad_token_id(tokenizer)
    model.save_pretrained(str(tmp), state_dict=state_dict)
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
