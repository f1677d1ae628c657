"""The container layer's one source of truth, docker/images.yaml, as the orchestrator sees it.

compose.yaml and the image builds follow the same file (tests check it), so image names, the
workspace's cache variables and the sandbox's limits cannot drift between them.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from mergebench.errors import MergeBenchError

IMAGES_YAML = Path(__file__).resolve().parents[2] / "docker" / "images.yaml"


@lru_cache(maxsize=1)
def images_config(path: Path = IMAGES_YAML) -> dict[str, Any]:
    if not path.is_file():
        raise MergeBenchError(f"{path} not found: container runtimes need a kit checkout (git clone) to know "
                              "their images")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise MergeBenchError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None


def image_tag(image: str, track: str | None = None, prefix: str | None = None) -> str:
    cfg = images_config()
    if image not in cfg["images"]:
        raise MergeBenchError(f"unknown image {image!r} (known: {', '.join(cfg['images'])})")
    track = track or os.environ.get("MERGEBENCH_IMAGE_TRACK") or cfg["default_track"]
    tag = cfg["tag"].format(image=image, version=cfg["kit_version"], track=track)
    prefix = prefix if prefix is not None else os.environ.get("MERGEBENCH_IMAGE_PREFIX")
    return f"{prefix.rstrip('/')}/{tag}" if prefix else tag


def cache_env(workspace: str) -> dict[str, str]:
    """The images' cache variables, moved from the compose mount point to the workspace's real path."""
    ws = images_config()["workspace"]
    return {k: v.replace(ws["mount"], workspace, 1) for k, v in ws["env"].items()}
