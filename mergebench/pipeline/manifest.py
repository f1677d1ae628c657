"""What a stage's manifest.json records, so every number can be traced to what made it.

Never a token: environment variables are not recorded wholesale, only an allow-list.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from mergebench import __version__

ENV_ALLOW = ("CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "MERGEBENCH_IMAGE",
             "MERGEBENCH_IMAGE_ID", "MERGEBENCH_IMAGE_DIGEST", "SLURM_JOB_ID")


def kit_revision() -> dict[str, Any]:
    """Git sha and dirty flag of the kit's source tree, when it is a checkout."""
    src = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", False
    return {"version": __version__, "git_sha": sha or None, "dirty": dirty if sha else None}


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                            "packages": sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                                               if d.metadata["Name"]),
                            "env": {k: os.environ[k] for k in ENV_ALLOW if k in os.environ}}
    if "torch" in sys.modules or _importable("torch"):
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def _importable(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def stage_manifest(stage: dict[str, Any], started: float, exit_code: int, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "stage": stage,
        "kit": kit_revision(),
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 3),
        "started_unix": started,
        "finished_unix": time.time(),
        "exit_code": exit_code,
        "environment": environment(),
        **extra,
    }
