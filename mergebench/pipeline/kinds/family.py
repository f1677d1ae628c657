"""Where a fetched or built family keeps its models: one answer for every stage kind that reads it."""

from __future__ import annotations

import json
from pathlib import Path

from mergebench.catalog import DOMAIN_NAMES
from mergebench.errors import MergeBenchError

MODELS_FILE = "models.json"  # written by hub fetch stages: role -> local directory
TASKS_FILE = "tasks.json"  # written by hub fetch stages: harness -> what its fetch/<harness> stage brought


def model_dir(family: Path, role: str) -> Path:
    """base, a domain (its specialist) or multitask, inside a tiny family or a fetched one."""
    index = family / MODELS_FILE
    if index.is_file():
        paths = json.loads(index.read_text())
        if role not in paths:
            raise MergeBenchError(f"{index}: no model for {role!r} (has {', '.join(paths)})")
        return Path(paths[role])
    path = family / role
    if not (path / "config.json").is_file():
        raise MergeBenchError(f"{family}: no {role} model (expected {path}/config.json)")
    return path


def tasks_data(family: Path, harness: str) -> dict:
    """What the fetch stage of `harness` prepared for its evaluations (its NLTK data folder, ...), or {}."""
    index = family / TASKS_FILE
    return json.loads(index.read_text()).get(harness, {}) if index.is_file() else {}


def specialists(family: Path) -> dict[str, Path]:
    return {d: model_dir(family, d) for d in DOMAIN_NAMES}


def resolve_model(label: str, family: Path, inputs: dict[str, Path]) -> Path:
    """An evaluation label to a directory: base/<domain>/multitask from the family, merge:* from input."""
    if ":" in label:
        out = inputs.get("model")
        if out is None:
            raise MergeBenchError(f"evaluation of {label}: the stage has no model input")
        return out / "model"
    return model_dir(family, label)


def validation_source(family: Path, domain: str) -> str:
    """A domain's validation data: the tiny family's JSONL, else the MergeBench hub set by domain name."""
    local = family / "data" / domain / "validation.jsonl"
    return str(local) if local.is_file() else domain


def prompt_template(family: Path) -> str:
    """The template the family's specialists were finetuned with (the tiny family records its recipe)."""
    manifest = family / "manifest.json"
    if manifest.is_file():
        recipe = json.loads(manifest.read_text()).get("config", {}).get("specialist_recipe", {})
        return recipe.get("template", "alpaca")
    return "alpaca"
