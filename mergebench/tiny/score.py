"""A quick scorer for the tiny family: greedy generation + each domain's checker → accuracy.

It exists so that builds and tests can check what a model knows in seconds; the kit's real evaluation
goes through the harnesses. Any Hugging Face causal LM directory with a tokenizer works (specialists,
merges), and the prompt is the same alpaca template the models were finetuned with.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from mergebench.errors import MergeBenchError
from mergebench.finetune.data import format_prompt
from mergebench.finetune.recipe import TINY_RECIPE
from mergebench.tiny.tasks import DOMAINS, GENERAL, check, read_jsonl

MAX_NEW_TOKENS = 24
#: The tiny family is trained with this template (TINY_RECIPE); any model derived from it shares it.
TEMPLATE = TINY_RECIPE.template


def prompt(instruction: str) -> str:
    """The exact prompt text the tiny family was finetuned with; evaluators must use this, not the
    full-scale alpaca template."""
    return format_prompt(instruction, TEMPLATE)


def load(model_dir: Path):
    """(model, tokenizer) in fp32 eval mode; the tokenizer pads on the left for batched generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise MergeBenchError(f"{model_dir}: not a model directory (no config.json)")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.eval()
    return model, tok


@torch.no_grad()
def generate(model, tok, prompts: list[str], batch_size: int = 128, max_new_tokens: int = MAX_NEW_TOKENS,
             template: str = TEMPLATE) -> list[str]:
    """Greedy completions of the prompts (template applied here), decoded without special tokens."""
    outs: list[str] = []
    for i in range(0, len(prompts), batch_size):
        texts = [format_prompt(p, template) for p in prompts[i:i + batch_size]]
        enc = tok(texts, return_tensors="pt", padding=True)
        gen = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        outs += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return outs


def accuracy(model, tok, rows: list[dict]) -> float:
    """Fraction of rows whose greedy output passes the row's domain checker."""
    if not rows:
        return float("nan")
    outputs = generate(model, tok, [r["prompt"] for r in rows])
    return sum(check(r, o) for r, o in zip(rows, outputs, strict=True)) / len(rows)


def score_model(model_dir: Path, data_dir: Path, domains: Iterable[str] = DOMAINS + (GENERAL,),
                split: str = "test", limit: int | None = None) -> dict[str, float]:
    """Accuracy per domain on the family's exported split (data_dir/<domain>/<split>.jsonl)."""
    model, tok = load(model_dir)
    scores = {}
    for d in domains:
        rows = read_jsonl(Path(data_dir) / d / f"{split}.jsonl")[:limit]
        scores[d] = accuracy(model, tok, rows)
    return scores
