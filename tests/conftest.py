"""Shared fixtures: tiny real checkpoint families and one tiny pipeline run, built once per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tinymodels import build_family  # noqa: E402
from tinypipeline import reproduce  # noqa: E402

KINDS = ("llama", "llama-tied", "gemma2")


@pytest.fixture(scope="session")
def families(tmp_path_factory) -> dict[str, tuple[Path, list[Path]]]:
    """Per architecture: an fp32 base and three specialists (specialist 0 sharded in small files)."""
    root = tmp_path_factory.mktemp("families")
    return {kind: build_family(root, kind) for kind in KINDS}


@pytest.fixture(scope="session")
def bf16_family(tmp_path_factory) -> tuple[Path, list[Path]]:
    return build_family(tmp_path_factory.mktemp("bf16"), "llama", dtype=torch.bfloat16)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny pipeline run once with the local runtime: (workspace, results folder, the completed run)."""
    root = tmp_path_factory.mktemp("pipeline")
    ws, results = root / "ws", root / "results"
    first = reproduce(ws, results)
    assert first.returncode == 0, first.stdout + first.stderr
    return ws, results, first
