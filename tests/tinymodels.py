"""Tiny real Hugging Face checkpoints for tests: Llama (tied and untied) and Gemma-2, random init.

Specialists are the base plus seeded noise, so every method has something to merge; they are saved
with save_pretrained exactly as a user's checkpoints would be.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

VOCAB = 96


def config(kind: str):
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    if kind == "llama":
        return LlamaConfig(**common, tie_word_embeddings=False)
    if kind == "llama-tied":
        return LlamaConfig(**common, tie_word_embeddings=True)
    if kind == "gemma2":
        return Gemma2Config(**common, head_dim=8, tie_word_embeddings=True, sliding_window=16)
    raise ValueError(kind)


def build_base(kind: str, out: Path, seed: int = 0, dtype=torch.float32) -> Path:
    torch.manual_seed(seed)
    cfg = config(kind)
    cls = Gemma2ForCausalLM if kind == "gemma2" else LlamaForCausalLM
    model = cls(cfg).to(dtype)
    with torch.no_grad():  # norms start at exactly 1 (or 0 in Gemma-2); make them non-trivial
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(out, max_shard_size="30KB" if kind == "llama" else "10GB")
    return out


def build_specialist(base: Path, out: Path, seed: int, scale: float = 0.02, extra_rows: int = 0,
                     max_shard_size: str = "10GB") -> Path:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_((torch.randn(p.shape, generator=gen) * scale).to(p.dtype))
    if extra_rows:
        model.resize_token_embeddings(model.config.vocab_size + extra_rows)
    model.save_pretrained(out, max_shard_size=max_shard_size)
    return out


def build_family(root: Path, kind: str, n: int = 3, dtype=torch.float32) -> tuple[Path, list[Path]]:
    base = build_base(kind, root / f"{kind}-base", dtype=dtype)
    experts = [build_specialist(base, root / f"{kind}-spec{i}", seed=100 + i,
                                max_shard_size="20KB" if i == 0 else "10GB") for i in range(n)]
    return base, experts
