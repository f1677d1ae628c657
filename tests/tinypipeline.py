"""The tiny pipeline as a user runs it: `mergebench reproduce` in a subprocess, on a few rows per task."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXE = str(Path(sys.executable).parent / "mergebench")
ARGS = ["--methods", "soup", "--eval-limit", "8"]


def reproduce(ws: Path, results: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "reproduce", *ARGS, "--workspace", str(ws), "--results", str(results), *extra],
                          capture_output=True, text=True, timeout=1200, **kw)
