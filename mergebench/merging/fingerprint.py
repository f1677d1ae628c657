"""Content fingerprints of input checkpoints for the merge manifest, cheap enough for 16 GB models.

Files in the Hugging Face cache are symlinks to blobs named by their SHA-256: that is the exact hash
for free. Other files get `sha256-sampled`: SHA-256 over the size, the safetensors header and 16
blocks of 64 KiB spread over the file, which tells different checkpoints apart without reading them
whole; `full=True` hashes every byte instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from pathlib import Path

BLOCK = 64 * 1024
SAMPLES = 16
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def fingerprint(path: Path, full: bool = False) -> str:
    real = Path(os.path.realpath(path))
    if real.parent.name == "blobs" and _SHA256.match(real.name):
        return f"sha256:{real.name}"
    h = hashlib.sha256()
    size = real.stat().st_size
    with open(real, "rb") as f:
        if full:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                h.update(chunk)
            return f"sha256:{h.hexdigest()}"
        h.update(struct.pack("<Q", size))
        head = f.read(8)
        h.update(head)
        if len(head) == 8:
            h.update(f.read(min(struct.unpack("<Q", head)[0], size)))
        for i in range(SAMPLES):
            f.seek(max(0, (size - BLOCK) * i // max(1, SAMPLES - 1)))
            h.update(f.read(BLOCK))
    return f"sha256-sampled:{h.hexdigest()}"
