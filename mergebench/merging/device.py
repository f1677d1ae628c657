"""Where merging and statistics run: a device name as the CLI takes it, checked against this machine."""

from __future__ import annotations

import torch

from mergebench.errors import MergeBenchError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MergeBenchError(f"device {name}: CUDA is not available on this machine (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise MergeBenchError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from None
