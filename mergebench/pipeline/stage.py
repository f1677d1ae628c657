"""A stage: one unit of work with a content key, so finished work is found again and never redone.

The key hashes everything that determines the stage's output: its kind and parameters, the keys of
the stages it reads, the environment it runs in (image) and the kit version. Changing one
hyperparameter therefore changes exactly that stage's key and the keys of what depends on it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from mergebench import __version__
from mergebench.stage_kinds import CATEGORY, HUB_KINDS  # the kinds' names: a leaf the HPC config reads too

__all__ = ["CATEGORY", "HUB_KINDS", "Stage", "stage_key"]


@dataclass
class Stage:
    name: str  # unique in its plan, e.g. "merge/ties"
    kind: str
    params: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)  # role -> name of the stage it reads
    image: str = "train"
    gpus: int = 0
    key: str = ""

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).strip("-")

    @property
    def dirname(self) -> str:
        return f"{self.slug}-{self.key[:12]}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "params": self.params, "inputs": self.inputs,
                "image": self.image, "gpus": self.gpus, "key": self.key}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stage:
        return cls(d["name"], d["kind"], d["params"], d.get("inputs", {}), d.get("image", "train"),
                   d.get("gpus", 0), d.get("key", ""))


def stage_key(stage: Stage, input_keys: dict[str, str], image_id: str) -> str:
    payload = {"kind": stage.kind, "params": stage.params, "inputs": dict(sorted(input_keys.items())),
               "image": image_id, "kit": __version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
