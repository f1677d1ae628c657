"""A statistics directory on disk: its file names, its manifest, writing one whole (renamed into place)
and reading one tensor's statistic at a time. The merge engine reads statistics through this module only,
so it does not depend on the pass that computes them (mergebench/merging/stats.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from mergebench.errors import MergeBenchError

KINDS = ("gram", "fisher", "mask")
FILES = {"gram": "grams.safetensors", "fisher": "fisher.safetensors", "mask": "masks.safetensors"}
MANIFEST = "stats_manifest.json"
# config.json fields that identify an architecture; statistics must come from a model that matches.
CONFIG_FIELDS = ("model_type", "architectures", "hidden_size", "num_hidden_layers", "intermediate_size",
                 "num_attention_heads", "num_key_value_heads", "head_dim")


def write_stats(out: Path, filename: str, tensors: dict[str, torch.Tensor], manifest: dict[str, Any]) -> None:
    """Write under a temporary sibling name, then rename: a statistics directory is complete or absent."""
    from safetensors.torch import save_file

    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_file(tensors, str(tmp / filename), metadata={"kind": manifest["kind"]})
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class StatsStore:
    """A statistics directory, opened for reading one tensor at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        mf = self.path / MANIFEST
        if not mf.is_file():
            raise MergeBenchError(f"{self.path}: not a statistics directory (no {MANIFEST}; make one with "
                                  "`mergebench stats`)")
        try:
            self.manifest = json.loads(mf.read_text())
            self.kind = self.manifest["kind"]
            self.file = self.path / FILES[self.kind]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise MergeBenchError(f"{mf}: invalid statistics manifest") from None
        if not self.file.is_file():
            raise MergeBenchError(f"{self.path}: {self.file.name} is missing")
        from mergebench.merging.checkpoint import read_header

        self.infos, _ = read_header(self.file)
        self.aliases: dict[str, str] = self.manifest.get("aliases") or {}
        for name, owner in self.aliases.items():
            if owner not in self.infos:
                raise MergeBenchError(f"{self.file}: {name} shares the Gram of {owner}, which is missing")

    def key(self, name: str) -> str | None:
        key = self.aliases.get(name, name)
        return key if key in self.infos else None

    def shape(self, name: str) -> tuple[int, ...] | None:
        key = self.key(name)
        return self.infos[key].shape if key else None

    def read(self, name: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
             rows: tuple[int, int] | None = None) -> torch.Tensor:
        """One tensor's statistic as `dtype` on `device`: the whole tensor, or the rows [start, end)."""
        from mergebench.merging.checkpoint import read_range

        key = self.key(name)
        if key is None:
            raise MergeBenchError(f"{self.path}: no statistics for tensor {name}")
        info = self.infos[key]  # the header was read once, when the store was opened
        start, end = rows or (0, info.shape[0] if info.shape else 1)
        per_row = info.numel // max(info.shape[0], 1) if info.shape else 1
        out = torch.empty((end - start, *info.shape[1:]) if info.shape else (), dtype=dtype)
        return read_range(info, out, start * per_row).to(device)
