"""One node, many GPUs: how a global batch is split, the ZeRO-3 config the kit writes, and the launch.

The arithmetic is the same for every backend. An optimizer step consumes `global_batch` sequences (the
paper's 160); each of the `world` ranks takes its contiguous share of them, `global_batch / world`,
and runs it as `accum` micro batches of `micro_batch` sequences, so that

    global_batch = world × micro_batch × accum

exactly (the reference ran 8 GPUs × 1 × 20). Every rank draws the same seeded permutation, so the
step's sequences, and the token count the loss is normalised by, are the same whatever `world` is:
only the order of the floating-point sums changes with the GPU count.

The launch is `python -m torch.distributed.run --standalone --nnodes 1 --nproc-per-node N -m
mergebench.finetune.worker JOB` (torchrun, part of torch): one process per GPU, each running the kit's
own loop with DeepSpeed wrapping model, optimizer and backward.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergebench.errors import MergeBenchError
from mergebench.finetune.recipe import Recipe

WORKER_MODULE = "mergebench.finetune.worker"


@dataclass(frozen=True)
class BatchPlan:
    world: int
    micro_batch: int
    #: Sequences each rank takes from one global batch.
    per_rank: int
    #: Micro batches each rank accumulates per optimizer step.
    accum: int

    @property
    def global_batch(self) -> int:
        return self.world * self.per_rank

    def shard(self, rank: int, batch: list) -> list:
        """Rank `rank`'s contiguous share of one global batch (all of it when world is 1)."""
        if len(batch) != self.global_batch:
            raise ValueError(f"a global batch has {self.global_batch} sequences, got {len(batch)}")
        return batch[rank * self.per_rank:(rank + 1) * self.per_rank]

    def to_dict(self) -> dict[str, int]:
        return {"world": self.world, "global_batch": self.global_batch, "per_rank": self.per_rank,
                "micro_batch": self.micro_batch, "accum": self.accum}


def plan_batches(recipe: Recipe, world: int) -> BatchPlan:
    """Split `recipe.global_batch` over `world` ranks of `recipe.micro_batch`; one-line error if it cannot."""
    if world < 1:
        raise MergeBenchError(f"number of GPUs must be at least 1 (got {world})")
    g, m = recipe.global_batch, recipe.micro_batch
    if g % (world * m):
        worlds = [w for w in range(1, g // m + 1) if (g // m) % w == 0]
        micros = [d for d in range(1, g // world + 1) if g % world == 0 and (g // world) % d == 0]
        hint = (f"with micro_batch={m} use {', '.join(map(str, worlds))} GPUs"
                + (f", or keep {world} GPUs with micro_batch one of {', '.join(map(str, micros))}" if micros else
                   f"; {g} sequences cannot be shared evenly by {world} GPUs"))
        raise MergeBenchError(f"global_batch={g} is not {world} GPUs × micro_batch={m} × a whole number of "
                              f"accumulation steps; {hint}")
    per_rank = g // world
    return BatchPlan(world, m, per_rank, per_rank // m)


def zero3_buckets(hidden_size: int) -> dict[str, int]:
    """ZeRO-3 communication sizes scaled to the model's width (the sizes Hugging Face's "auto" picks)."""
    return {"reduce_bucket_size": hidden_size * hidden_size,
            "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
            "stage3_param_persistence_threshold": 10 * hidden_size}


def deepspeed_config(recipe: Recipe, plan: BatchPlan, hidden_size: int | None = None) -> dict[str, Any]:
    """The ZeRO-3 config for `recipe` on `plan`: every value concrete (no "auto"), nothing left to a trainer.

    Optimizer and schedule are not in it: the kit passes its own AdamW and warmup + cosine schedule, so
    the DeepSpeed run optimizes exactly what the native loop does. Bucket sizes follow the model's width
    when it is known, else DeepSpeed's defaults apply.
    """
    zero: dict[str, Any] = {"stage": 3, "overlap_comm": True, "contiguous_gradients": True,
                            "stage3_gather_16bit_weights_on_model_save": True}
    if hidden_size:
        zero.update(zero3_buckets(hidden_size))
    return {
        "train_batch_size": recipe.global_batch,
        "train_micro_batch_size_per_gpu": plan.micro_batch,
        "gradient_accumulation_steps": plan.accum,
        "gradient_clipping": recipe.grad_clip,
        "bf16": {"enabled": recipe.bf16},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1_000_000,
        "wall_clock_breakdown": False,
    }


def parse_gpus(spec: str | None, visible: int) -> tuple[int, str | None]:
    """--gpus: a count ("8") or device ids ("0,1,2,3"); None means every visible GPU.

    Returns (number of ranks, CUDA_VISIBLE_DEVICES to set or None).
    """
    if spec is None:
        if visible < 1:
            raise MergeBenchError("no GPU is visible; pass --gpus N (or run without --deepspeed)")
        return visible, None
    text = spec.strip()
    try:
        if "," in text:
            ids = [int(x) for x in text.split(",")]
            if len(set(ids)) != len(ids) or min(ids) < 0:
                raise ValueError
            return len(ids), ",".join(map(str, ids))
        count = int(text)
    except ValueError:
        raise MergeBenchError(f"--gpus {spec!r}: expected a count (8) or device ids (0,1,2,3)") from None
    if count < 1:
        raise MergeBenchError(f"--gpus {spec!r}: at least one GPU")
    return count, None


def launch_argv(job: Path, world: int, python: str | None = None) -> list[str]:
    """The exact command that starts one worker per GPU on this node."""
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
            "--nproc-per-node", str(world), "-m", WORKER_MODULE, str(job)]
