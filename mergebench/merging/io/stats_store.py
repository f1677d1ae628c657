"""A statistics directory on disk: its file names, its manifest, writing one whole (renamed into place)
and reading one tensor's statistic at a time. The merge engine reads statistics through this module only,
so it does not depend on the pass that computes them (mergebench/merging/datapass/stats.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mergebench.errors import MergeBenchError


@dataclass(frozen=True)
class StatsKind:
    """One kind of per-specialist statistics: its file, and what a merge reads of it and checks."""

    name: str
    file: str
    dtype: torch.dtype  # as a merge reads it
    square: bool  # one [in, in] matrix per linear layer of the decoder (a Gram), else one value per weight entry
    extra_rows: bool  # per-entry statistics of a specialist with extra vocabulary rows keep them
    needs_base: bool  # computed against the base model (masks select entries of τ = specialist − base)
    stored: tuple[torch.dtype, ...] | None = None  # dtypes the file may hold (None: any)

    def needed(self, merged: list[str], shapes: dict[str, tuple[int, ...]]) -> set[str]:
        """The merged tensors this kind must cover: a Gram for each 2-D tensor inside `layers.N.`."""
        if not self.square:
            return set(merged)
        return {n for n in merged if re.search(r"(^|\.)layers\.\d+\.", n) and len(shapes[n]) == 2}

    def expected_shape(self, tensor_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (tensor_shape[1], tensor_shape[1]) if self.square else tuple(tensor_shape)


GRAM = StatsKind("gram", "grams.safetensors", torch.float32, square=True, extra_rows=False, needs_base=False)
FISHER = StatsKind("fisher", "fisher.safetensors", torch.float32, square=False, extra_rows=True, needs_base=False)
MASK = StatsKind("mask", "masks.safetensors", torch.bool, square=False, extra_rows=False, needs_base=True,
                 stored=(torch.bool, torch.uint8))
KINDS: dict[str, StatsKind] = {k.name: k for k in (GRAM, FISHER, MASK)}
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
            self.file = self.path / KINDS[self.kind].file
        except (json.JSONDecodeError, KeyError, TypeError):
            raise MergeBenchError(f"{mf}: invalid statistics manifest") from None
        if not self.file.is_file():
            raise MergeBenchError(f"{self.path}: {self.file.name} is missing")
        from mergebench.merging.io.checkpoint import read_header

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
        from mergebench.merging.io.checkpoint import read_range

        key = self.key(name)
        if key is None:
            raise MergeBenchError(f"{self.path}: no statistics for tensor {name}")
        info = self.infos[key]  # the header was read once, when the store was opened
        start, end = rows or (0, info.shape[0] if info.shape else 1)
        per_row = info.numel // max(info.shape[0], 1) if info.shape else 1
        out = torch.empty((end - start, *info.shape[1:]) if info.shape else (), dtype=dtype)
        return read_range(info, out, start * per_row).to(device)
