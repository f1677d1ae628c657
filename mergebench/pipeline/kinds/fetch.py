"""Fetch stage: bring a family's models (a MergeBench base and its five specialists, or a researcher's
own family, hub ids or local directories) and, for the data-dependent methods, the validation sets
into the workspace's HF cache.

The only stage that sees HF_TOKEN and may reach the hub; it records each repo's resolved revision.
Local directories are recorded where they are (their fingerprint is in the stage key). Once every
model is there, each is checked to be a causal LM of the base's architecture. It runs after the
harnesses' own fetch stages (fetch/<harness>) and records what they brought, so that every later stage,
reading only this one, finds everything offline.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mergebench.catalog.families import check_architectures
from mergebench.errors import MergeBenchError
from mergebench.evaluation.adapters.invocation import hub_error
from mergebench.pipeline.execute import StageContext
from mergebench.pipeline.kinds.family import MODELS_FILE, TASKS_FILE
from mergebench.pipeline.kinds.fetch_tasks import BROUGHT

PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.jinja", "*.txt"]


def run(ctx: StageContext) -> dict:
    from huggingface_hub import snapshot_download

    paths, revisions = {}, {}
    token = os.environ.get("HF_TOKEN")
    for role, source in ctx.params["models"].items():
        if role in ctx.params.get("local", {}):
            print(f"[fetch] {role}: local {source}", flush=True)
            paths[role] = source
            continue
        print(f"[fetch] {role}: {source}", flush=True)
        path = _download(snapshot_download, source, token, allow_patterns=PATTERNS)
        paths[role] = path
        revisions[source] = os.path.basename(path)
    for repo in ctx.params.get("datasets", []):
        print(f"[fetch] dataset: {repo}", flush=True)
        revisions[repo] = os.path.basename(_download(snapshot_download, repo, token, repo_type="dataset"))
    check_architectures({role: Path(p) for role, p in paths.items()}, f"family {ctx.params['model']}")
    (ctx.out / MODELS_FILE).write_text(json.dumps(paths, indent=2) + "\n")
    brought = {role.removeprefix("tasks_"): json.loads((path / BROUGHT).read_text())
               for role, path in ctx.inputs.items() if role.startswith("tasks_")}
    (ctx.out / TASKS_FILE).write_text(json.dumps(brought, indent=2) + "\n")
    return {"revisions": revisions}


def _download(snapshot_download, repo: str, token: str | None, **kwargs) -> str:
    try:
        return snapshot_download(repo, token=token, **kwargs)
    except Exception as e:  # noqa: BLE001 - the hub raises many kinds; one line says which repo
        raise MergeBenchError(f"fetch {repo}: {hub_error(e)}") from None
