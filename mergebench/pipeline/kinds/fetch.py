"""Fetch stage: download a MergeBench base, its five specialists and, for the data-dependent methods,
the validation sets into the workspace's HF cache.

The only stage that sees HF_TOKEN and may reach the hub; it records each repo's resolved revision.
"""

from __future__ import annotations

import json
import os

from mergebench.errors import MergeBenchError
from mergebench.pipeline.execute import StageContext
from mergebench.pipeline.kinds.family import MODELS_FILE

PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.jinja", "*.txt"]


def run(ctx: StageContext) -> dict:
    from huggingface_hub import snapshot_download

    repos = {"base": ctx.params["base"], **ctx.params["specialists"]}
    paths, revisions = {}, {}
    token = os.environ.get("HF_TOKEN")
    for role, repo in repos.items():
        print(f"[fetch] {role}: {repo}", flush=True)
        path = _download(snapshot_download, repo, token, allow_patterns=PATTERNS)
        paths[role] = path
        revisions[repo] = os.path.basename(path)
    for repo in ctx.params.get("datasets", []):
        print(f"[fetch] dataset: {repo}", flush=True)
        revisions[repo] = os.path.basename(_download(snapshot_download, repo, token, repo_type="dataset"))
    (ctx.out / MODELS_FILE).write_text(json.dumps(paths, indent=2) + "\n")
    return {"revisions": revisions}


def _download(snapshot_download, repo: str, token: str | None, **kwargs) -> str:
    try:
        return snapshot_download(repo, token=token, **kwargs)
    except Exception as e:  # noqa: BLE001 - the hub raises many kinds; one line says which repo
        hint = " (gated: set HF_TOKEN with access to it)" if "401" in str(e) or "403" in str(e) else ""
        raise MergeBenchError(f"fetch {repo}: {type(e).__name__}{hint}") from None
