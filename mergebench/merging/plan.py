"""What a merge reads and what it merges, validated before anything is computed: the checkpoints (labels
made unique), their architectures and tensor shapes against the base, the names merged and the names a
global threshold ranks, and the task-vector source that reads them. The streaming merge, RegMean++'s
layer executor and Localize-and-Stitch's mask training all start from one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mergebench.errors import MergeBenchError
from mergebench.merging.device import resolve_device
from mergebench.merging.io.checkpoint import Checkpoint
from mergebench.merging.io.source import TaskVectorSource
from mergebench.merging.methods import MethodSpec
from mergebench.merging.selection import merged_names, natural_key, threshold_names

# config.json fields that must agree between base and specialists (vocab_size may differ).
ARCH_FIELDS = ("model_type", "architectures", "hidden_size", "num_hidden_layers", "intermediate_size",
               "num_attention_heads", "num_key_value_heads", "head_dim")


@dataclass
class MergePlan:
    """Validated inputs of one merge."""

    base: Checkpoint
    experts: list[Checkpoint]
    source: TaskVectorSource
    names: list[str]  # every tensor of the base, in natural order
    merged: list[str]  # those merged (the others keep the base's values)
    ranked: list[str]  # those a global threshold ranks ([] when the method uses none)

    @classmethod
    def build(cls, spec: MethodSpec, hp: dict[str, Any], base: str, experts: list[str],
              labels: list[str] | None = None, include: list[str] | tuple = (), exclude: list[str] | tuple = (),
              device: str | torch.device = "auto") -> MergePlan:
        """Open and check everything; a one-line error naming the checkpoint and the problem otherwise."""
        device = device if isinstance(device, torch.device) else resolve_device(device)
        base_ckpt = Checkpoint(base, label="base")
        labels = labels or [None] * len(experts)
        if len(labels) != len(experts):
            raise MergeBenchError(f"{len(labels)} labels given for {len(experts)} specialists")
        expert_ckpts = [Checkpoint(e, label=lab) for e, lab in zip(experts, labels, strict=True)]
        _dedupe_labels(expert_ckpts)
        names = sorted(base_ckpt.tensors, key=natural_key)
        merged = merged_names(names, list(include), list(exclude))
        if not merged:
            raise MergeBenchError("the include/exclude patterns select no tensor of the base model")
        _check_architecture(base_ckpt, expert_ckpts)
        needs = spec.needs(hp)
        ranked = threshold_names(names, merged, needs.threshold_set) if needs.global_threshold else []
        _check_tensors(base_ckpt, expert_ckpts, sorted(set(merged) | set(ranked)))
        return cls(base_ckpt, expert_ckpts, TaskVectorSource(base_ckpt, expert_ckpts, device), names, merged, ranked)


def extra_rows_ok(name: str, have: tuple[int, ...], want: tuple[int, ...]) -> bool:
    """A specialist's embedding or lm_head may carry extra vocabulary rows; the base's rows are used."""
    vocab_tensor = "embed" in name or name.startswith("lm_head")
    return vocab_tensor and len(have) == len(want) and have[1:] == want[1:] and have[0] >= want[0]


def _dedupe_labels(experts: list[Checkpoint]) -> None:
    seen: dict[str, int] = {}
    for e in experts:
        if e.label in seen:
            seen[e.label] += 1
            e.label = f"{e.label}#{seen[e.label]}"
        else:
            seen[e.label] = 0


def _check_architecture(base: Checkpoint, experts: list[Checkpoint]) -> None:
    for e in experts:
        for key in ARCH_FIELDS:
            if base.config.get(key) != e.config.get(key):
                raise MergeBenchError(f"{e.path}: architecture differs from the base ({key} = {e.config.get(key)!r}, "
                                      f"base has {base.config.get(key)!r})")


def _check_tensors(base: Checkpoint, experts: list[Checkpoint], names: list[str]) -> None:
    for e in experts:
        for name in names:
            info = e.tensors.get(name)
            if info is None:
                raise MergeBenchError(f"{e.path}: tensor {name} is missing (the base has it)")
            want = base.tensors[name].shape
            if info.shape != want and not extra_rows_ok(name, info.shape, want):
                raise MergeBenchError(f"{e.path}: tensor {name} has shape {list(info.shape)}, "
                                      f"the base has {list(want)}")
