"""SFT recipes as typed dataclasses: the paper's full-scale values by default, overridable by name.

`Recipe()` is MergeBench's published setting (SPEC "Finetuning"); `TINY_RECIPE` overrides what a
CPU-sized model needs. Overrides come from users (CLI `--set`, YAML), so every value is type-checked
and a wrong one is a one-line MergeBenchError, not a stack trace from deep inside the training loop.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any

from mergebench.catalog.prompts import TEMPLATES
from mergebench.errors import MergeBenchError

SCHEDULERS = ("cosine", "linear", "constant")
BACKENDS = ("native", "deepspeed")
#: DART-Math's two released sets (hkust-nlp/<name>); SPEC names DART-Math without saying which.
MATH_SUBSETS = ("dart-math-hard", "dart-math-uniform")
#: Which WildGuardMix responses a safety specialist learns from: all, or only those not labelled harmful.
SAFETY_RESPONSES = ("unharmful", "all")


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a finetuning run's output, besides the data and the initial model."""

    lr: float = 2e-5
    scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    epochs: float = 2.0
    #: Sequences per optimizer step across all devices; reached by gradient accumulation of micro batches.
    global_batch: int = 160
    micro_batch: int = 4
    seq_len: int = 2048
    #: Concatenate examples into seq_len blocks (the paper's setting) instead of padding each batch.
    packing: bool = True
    bf16: bool = True
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    seed: int = 42
    template: str = "alpaca"
    #: Stop after this many optimizer steps (None: run the epochs); the schedule still spans the epochs.
    max_steps: int | None = None
    #: Write a resumable checkpoint every this many optimizer steps (0: only at the end).
    save_every: int = 500
    #: "native": this package's loop in one process; "deepspeed": the same loop on every GPU of one node
    #: with DeepSpeed ZeRO-3 (the paper's), started by `mergebench finetune --deepspeed`.
    backend: str = "native"
    #: Recompute activations in the backward pass (less memory, about a third more compute).
    gradient_checkpointing: bool = False
    #: CPU threads for torch; fixed so that results do not depend on the machine's core count.
    threads: int = 0
    # The real datasets (mergebench/finetune/sources.py); the tiny family ignores these.
    #: Keep at most this many usable rows per domain, chosen by `data_seed` (None: every row).
    max_samples: int | None = None
    data_seed: int = 0
    #: hkust-nlp/<math_subset> for the math domain.
    math_subset: str = "dart-math-hard"
    #: Comma-separated Aya `language` names to keep (e.g. "French,Spanish,German,Russian"); empty: all.
    aya_languages: str = ""
    #: WildGuardMix rows to learn from: "unharmful" drops responses labelled harmful; "all" keeps them.
    safety_responses: str = "unharmful"

    def __post_init__(self) -> None:
        hints = _field_types()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _check_type(f.name, value, hints[f.name])
            if hints[f.name] is float and isinstance(value, int):  # 3 and 3.0 are one recipe, one key
                object.__setattr__(self, f.name, float(value))
        if self.scheduler not in SCHEDULERS:
            raise MergeBenchError(f"recipe scheduler={self.scheduler!r}: expected one of {', '.join(SCHEDULERS)}")
        if self.template not in TEMPLATES:
            raise MergeBenchError(f"recipe template={self.template!r}: expected one of {', '.join(TEMPLATES)}")
        if self.backend not in BACKENDS:
            raise MergeBenchError(f"recipe backend={self.backend!r}: expected one of {', '.join(BACKENDS)}")
        for name, choices in (("math_subset", MATH_SUBSETS), ("safety_responses", SAFETY_RESPONSES)):
            if getattr(self, name) not in choices:
                raise MergeBenchError(f"recipe {name}={getattr(self, name)!r}: expected one of {', '.join(choices)}")
        for name in ("lr", "epochs", "global_batch", "micro_batch", "seq_len", "max_samples"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise MergeBenchError(f"recipe {name}={getattr(self, name)!r}: must be positive")
        if not 0 <= self.warmup_ratio < 1:
            raise MergeBenchError(f"recipe warmup_ratio={self.warmup_ratio!r}: must be in [0, 1)")
        if self.global_batch % self.micro_batch:
            raise MergeBenchError(f"recipe global_batch={self.global_batch} is not a multiple of "
                                  f"micro_batch={self.micro_batch}")

    def override(self, **changes: Any) -> Recipe:
        """A copy with some values changed; unknown names and wrong types are one-line errors."""
        known = {f.name for f in dataclasses.fields(self)}
        for name in changes:
            if name not in known:
                raise MergeBenchError(f"unknown recipe setting {name!r}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """A stable text of every value, for manifests and for deciding whether a build is complete."""
        return json.dumps(self.to_dict(), sort_keys=True)


@typing.no_type_check
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Recipe)


def _check_type(name: str, value: Any, hint: Any) -> None:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for t in allowed:
        if t is type(None) and value is None:
            return
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if t in (str, bool) and isinstance(value, t):
            return
    want = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
    raise MergeBenchError(f"recipe {name}={value!r}: expected {want}, got {type(value).__name__}")


#: The tiny family's recipe: same code path, CPU-sized values (fp32, padding, short sequences).
TINY_RECIPE = Recipe(lr=1e-3, warmup_ratio=0.1, epochs=1.0, global_batch=16, micro_batch=16, seq_len=96,
                     packing=False, bf16=False, adam_beta2=0.98, seed=0, save_every=0, threads=1,
                     template="alpaca-short")
