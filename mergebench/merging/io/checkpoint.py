"""Read-only access to a (possibly sharded) safetensors checkpoint without loading it.

We parse the safetensors headers ourselves so that a corrupt or truncated file is reported before any
work starts, and map each tensor's byte range only while it is being read: resident memory stays at a
few tensors whatever the model size (a whole-file mmap would count every page ever touched).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from mergebench.errors import MergeBenchError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: file, dtype, shape and absolute byte range."""

    name: str
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate one safetensors file's header; raise a one-line error if it is damaged."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) < 8:
                raise MergeBenchError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
            (hlen,) = struct.unpack("<Q", raw_len)
            if hlen > MAX_HEADER or 8 + hlen > size:
                raise MergeBenchError(f"{path}: corrupt or truncated safetensors header (length {hlen}, file {size} bytes)")
            header = json.loads(f.read(hlen))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MergeBenchError(f"{path}: corrupt safetensors header ({e.__class__.__name__})") from None
    except OSError as e:
        raise MergeBenchError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(header, dict):
        raise MergeBenchError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    base = 8 + hlen
    infos: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        try:
            dtype = DTYPES[entry["dtype"]]
            shape = tuple(int(s) for s in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise MergeBenchError(f"{path}: tensor {name} has a malformed or unsupported header entry") from None
        info = TensorInfo(name, path, dtype, shape, base + begin, base + end)
        expected = info.numel * torch.empty((), dtype=dtype).element_size()
        if end - begin != expected:
            raise MergeBenchError(f"{path}: tensor {name} spans {end - begin} bytes but its shape needs {expected}")
        if base + end > size:
            raise MergeBenchError(f"{path}: truncated file (tensor {name} ends at byte {base + end}, file has {size})")
        infos[name] = info
    return infos, metadata


@contextlib.contextmanager
def mapped_range(info: TensorInfo, first: int, count: int) -> Iterator[torch.Tensor]:
    """A flat CPU tensor of `count` elements of the tensor `info` describes, from element `first` on,
    viewing the file's pages (copy-on-write: writes never reach the file) inside the `with`. Only that
    byte range is mapped, and only for that long, so resident memory does not grow with the file."""
    if count == 0:
        yield torch.empty(0, dtype=info.dtype)
        return
    start = info.start + first * torch.empty((), dtype=info.dtype).element_size()
    page = mmap.ALLOCATIONGRANULARITY
    offset = start - start % page
    with open(info.file, "rb") as f:
        mm = mmap.mmap(f.fileno(), info.end - offset, access=mmap.ACCESS_COPY, offset=offset)
    try:
        yield torch.frombuffer(mm, dtype=info.dtype, offset=start - offset, count=count)
    finally:
        try:
            mm.close()
        except BufferError:  # the caller still holds a view: the pages are unmapped when it goes
            pass


def read_range(info: TensorInfo, out: torch.Tensor, first: int = 0) -> torch.Tensor:
    """Copy `out.numel()` elements of the tensor `info` describes, from element `first` on, into `out`
    (converting on the fly)."""
    if out.numel():
        with mapped_range(info, first, out.numel()) as view:
            out.view(-1).copy_(view)
            del view  # so the map closes now
    return out


def resolve_model_path(spec: str | os.PathLike) -> Path:
    """A local directory, or a hub id resolved through the local HF cache (never downloads)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    text = str(spec)
    if path.exists():
        raise MergeBenchError(f"{text}: expected a model directory, found a file")
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            local = snapshot_download(
                text, local_files_only=True, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.jinja"]
            )
        except Exception:  # noqa: BLE001 - hub raises many kinds; all mean "not cached"
            raise MergeBenchError(
                f"{text}: not a local directory and not in the Hugging Face cache "
                f"(HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}); download it first, "
                "e.g. `hf download " + text + "`"
            ) from None
        return Path(local)
    raise MergeBenchError(f"{text}: model directory does not exist")


class Checkpoint:
    """A model directory: config plus tensors spread over one or many safetensors shards."""

    def __init__(self, spec: str | os.PathLike, label: str | None = None):
        self.path = resolve_model_path(spec)
        self.label = label or self.path.name
        self.config = self._read_config()
        self.files = self._shard_files()
        self.tensors: dict[str, TensorInfo] = {}
        for file in self.files:
            infos, _ = read_header(file)
            for name, info in infos.items():
                if name in self.tensors:
                    raise MergeBenchError(f"{file}: tensor {name} also appears in {self.tensors[name].file.name}")
                self.tensors[name] = info

    def _read_config(self) -> dict:
        cfg = self.path / "config.json"
        if not cfg.is_file():
            raise MergeBenchError(f"{self.path}: no config.json (not a Hugging Face model directory)")
        try:
            return json.loads(cfg.read_text())
        except json.JSONDecodeError as e:
            raise MergeBenchError(f"{cfg}: invalid JSON ({e.msg} at line {e.lineno})") from None

    def _shard_files(self) -> list[Path]:
        index = self.path / INDEX_NAME
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise MergeBenchError(f"{index}: invalid index (expected JSON with a weight_map)") from None
            files = sorted({self.path / f for f in weight_map.values()})
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise MergeBenchError(f"{index}: lists shard {missing[0]}, which is missing")
            return files
        if (self.path / SINGLE_NAME).is_file():
            return [self.path / SINGLE_NAME]
        found = sorted(self.path.glob("*.safetensors"))
        if not found:
            raise MergeBenchError(f"{self.path}: no safetensors weights (expected {SINGLE_NAME} or {INDEX_NAME})")
        return found

    @property
    def tied_embeddings(self) -> bool:
        return "lm_head.weight" not in self.tensors

    def read(self, name: str, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
        """Read one tensor into its own memory (converted to `dtype`, or raw when None)."""
        info = self.tensors[name]
        out = torch.empty(info.shape, dtype=dtype or info.dtype)
        return self.read_into(name, out)

    def read_into(self, name: str, out: torch.Tensor, first: int = 0) -> torch.Tensor:
        """Copy `out.numel()` elements of one tensor, from element `first` on, converting on the fly, into
        a preallocated CPU tensor: the whole tensor, or a block of rows.

        A tensor with more rows than `out` (extra vocabulary rows) is cut to `out`'s leading rows.
        """
        return read_range(self.tensors[name], out, first)

    def iter_bytes(self, name: str, chunk: int = 64 * 2**20):
        """The tensor's raw bytes in chunks, so unmerged tensors (a 1 GB embedding) pass through in
        constant memory."""
        info = self.tensors[name]
        with open(info.file, "rb") as f:
            f.seek(info.start)
            left = info.nbytes
            while left:
                data = f.read(min(chunk, left))
                if not data:
                    raise MergeBenchError(f"{info.file}: truncated while reading tensor {name}")
                left -= len(data)
                yield data
