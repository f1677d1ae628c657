"""Streaming writer for a sharded safetensors checkpoint.

Output shapes and dtypes are known before any tensor is computed, so every shard's header is written
first and each tensor's bytes go straight to their final offset as soon as they exist: no shard is
ever held in memory. Everything lands in a temporary sibling directory that is renamed into place only
when complete, so an interrupted merge never leaves something that looks finished.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mergebench.errors import MergeBenchError
from mergebench.merging.io.checkpoint import DTYPE_NAMES, INDEX_NAME, SINGLE_NAME

# Files of the base model that travel with the merged weights.
SIDE_FILE_PATTERNS = (
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template*",
    "vocab*",
    "merges.txt",
    "*.model",
    "preprocessor_config.json",
)


@dataclass
class _Slot:
    shard: int
    start: int  # absolute byte offset in the shard file
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]


@dataclass
class _Shard:
    names: list[str] = field(default_factory=list)
    nbytes: int = 0


def parse_size(text: str | int) -> int:
    """'5GB', '500MB', '2GiB' or a byte count."""
    if isinstance(text, int):
        return text
    t = text.strip().upper().replace(" ", "")
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "KB": 10**3, "MB": 10**6, "GB": 10**9,
             "TB": 10**12, "B": 1}
    for unit, mult in units.items():
        if t.endswith(unit):
            try:
                return int(float(t[: -len(unit)]) * mult)
            except ValueError:
                break
    try:
        return int(t)
    except ValueError:
        raise MergeBenchError(f"max shard size {text!r}: expected a size such as 5GB, 500MB or 2GiB") from None


class ShardedWriter:
    """Plan shards for a known list of tensors, then accept tensors in that order."""

    def __init__(self, out_dir: Path, layout: list[tuple[str, torch.dtype, tuple[int, ...]]], max_shard_size: int):
        self.out_dir = Path(out_dir)
        self.tmp_dir = self.out_dir.with_name(f".{self.out_dir.name}.partial-{os.getpid()}")
        self.shards: list[_Shard] = []
        self.slots: dict[str, _Slot] = {}
        self._plan(layout, max_shard_size)
        self._handles: dict[int, object] = {}
        self._written: dict[str, int] = {}  # bytes written per tensor

    def _plan(self, layout, max_shard_size: int) -> None:
        current = _Shard()
        for name, dtype, shape in layout:
            nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
            if current.names and current.nbytes + nbytes > max_shard_size:
                self.shards.append(current)
                current = _Shard()
            current.names.append(name)
            current.nbytes += nbytes
            self.slots[name] = _Slot(len(self.shards), 0, nbytes, dtype, tuple(shape))
        self.shards.append(current)

    def shard_name(self, i: int) -> str:
        n = len(self.shards)
        return SINGLE_NAME if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"

    def open(self) -> None:
        _remove_stale_partials(self.out_dir)
        if self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir)
        self.tmp_dir.mkdir(parents=True)
        os.chmod(self.tmp_dir, 0o755)
        for i, shard in enumerate(self.shards):
            header: dict[str, object] = {"__metadata__": {"format": "pt"}}
            offset = 0
            for name in shard.names:
                slot = self.slots[name]
                header[name] = {"dtype": DTYPE_NAMES[slot.dtype], "shape": list(slot.shape),
                                "data_offsets": [offset, offset + slot.nbytes]}
                offset += slot.nbytes
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)
            acc = 8 + len(raw)  # absolute offset of the first tensor's bytes
            for name in shard.names:
                self.slots[name].start = acc
                acc += self.slots[name].nbytes
            fh = open(self.tmp_dir / self.shard_name(i), "w+b")  # read too: fix-ups map it
            fh.write(struct.pack("<Q", len(raw)) + raw)
            fh.truncate(acc)
            self._handles[i] = fh

    def write(self, name: str, tensor: torch.Tensor) -> None:
        slot = self.slots[name]
        if tensor.dtype != slot.dtype or tuple(tensor.shape) != slot.shape:
            raise MergeBenchError(f"internal error: tensor {name} is {tensor.dtype}{tuple(tensor.shape)}, "
                                  f"planned {slot.dtype}{slot.shape}")
        self.write_part(name, 0, tensor)

    def write_part(self, name: str, byte_offset: int, tensor: torch.Tensor) -> None:
        """Write a block of a tensor's elements (rows, for large tensors merged piece by piece)."""
        slot = self.slots[name]
        if tensor.dtype != slot.dtype:
            raise MergeBenchError(f"internal error: tensor {name} block is {tensor.dtype}, planned {slot.dtype}")
        data = tensor.detach().contiguous().cpu().view(torch.uint8).numpy().data if tensor.numel() else b""
        fh = self._handles[slot.shard]
        fh.seek(slot.start + byte_offset)
        self._written[name] = self._written.get(name, 0) + fh.write(data)

    def write_chunks(self, name: str, chunks) -> None:
        """Write a tensor's raw bytes, given in order as any number of chunks."""
        slot = self.slots[name]
        fh = self._handles[slot.shard]
        fh.seek(slot.start)
        written = 0
        for data in chunks:
            written += fh.write(data)
        self._written[name] = written

    def patch(self, name: str, flat_index: torch.Tensor, values: torch.Tensor) -> None:
        """Overwrite single elements of an already written tensor (fix-ups after the pass: TIES zero signs,
        entries near a bracketed threshold), scattered through a writable map of the tensor's bytes."""
        if not flat_index.numel():
            return
        slot = self.slots[name]
        fh = self._handles[slot.shard]
        fh.flush()
        page = mmap.ALLOCATIONGRANULARITY
        offset = slot.start - slot.start % page
        mm = mmap.mmap(fh.fileno(), slot.start + slot.nbytes - offset, access=mmap.ACCESS_WRITE, offset=offset)
        try:
            view = torch.frombuffer(mm, dtype=slot.dtype, offset=slot.start - offset,
                                    count=slot.nbytes // torch.empty((), dtype=slot.dtype).element_size())
            view[flat_index.to(torch.int64)] = values.to(slot.dtype)
            del view
        finally:
            mm.close()

    def finish(self, base_dir: Path, extra_files: dict[str, str]) -> None:
        """Close shards, write the index, copy the base's side files, and move into place."""
        missing = [n for n, slot in self.slots.items() if self._written.get(n, 0) != slot.nbytes]
        if missing:
            raise MergeBenchError(f"internal error: tensor {missing[0]} was planned but not completely written")
        for fh in self._handles.values():
            fh.close()
        self._handles.clear()
        if len(self.shards) > 1:
            index = {"metadata": {"total_size": sum(s.nbytes for s in self.shards)},
                     "weight_map": {n: self.shard_name(i) for i, s in enumerate(self.shards) for n in s.names}}
            (self.tmp_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        for pattern in SIDE_FILE_PATTERNS:
            for src in sorted(Path(base_dir).glob(pattern)):
                if src.is_file() and not (self.tmp_dir / src.name).exists():
                    shutil.copyfile(src, self.tmp_dir / src.name)
        for fname, text in extra_files.items():
            (self.tmp_dir / fname).write_text(text)
        for p in self.tmp_dir.iterdir():
            os.chmod(p, 0o644)
        if self.out_dir.exists():
            shutil.rmtree(self.out_dir)
        os.replace(self.tmp_dir, self.out_dir)

    def failed(self, e: OSError) -> MergeBenchError:
        """Abort after a write error (a full disk) and say so in one line naming the output."""
        self.abort()
        return MergeBenchError(f"{self.out_dir}: cannot write the merged model: {e.strerror or e} "
                               f"(errno {e.errno}); nothing was written")

    def abort(self) -> None:
        for fh in self._handles.values():
            try:
                fh.close()
            except OSError:  # a full disk also fails the flush on close; the files are deleted anyway
                pass
        self._handles.clear()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


def _remove_stale_partials(out_dir: Path) -> None:
    """Delete leftovers of merges into the same output that were killed (their process is gone)."""
    for partial in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        try:
            os.kill(int(partial.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(partial, ignore_errors=True)
        except (ValueError, PermissionError):
            continue
