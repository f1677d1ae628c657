"""Tiny checkpoints with a character tokenizer, and tiny validation sets, for the data-dependent methods.

The tokenizer maps each character to one id (unknown characters to <unk>), fits the tiny models'
96-entry vocabulary, and is saved next to the weights like a real model's tokenizer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from tinymodels import VOCAB, build_base

from mergebench.merging.datapass.samples import DOMAINS


def save_char_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    chars = ["<unk>", "<eos>", "\n", " "] + [chr(c) for c in range(33, 33 + VOCAB - 4)]
    vocab = {c: i for i, c in enumerate(chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    from tokenizers import pre_tokenizers

    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    fast.save_pretrained(out)


def build_specialist_same_embeddings(base: Path, out: Path, seed: int, scale: float = 0.05) -> Path:
    """Base plus seeded noise on every parameter except the embeddings and lm_head."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed" not in name and not name.startswith("lm_head"):
                p.add_(torch.randn(p.shape, generator=gen) * scale)
    model.save_pretrained(out)
    save_char_tokenizer(out)
    return out


def build_data_family(root: Path, kind: str, n: int = 2, layers: int = 2) -> tuple[Path, list[Path]]:
    base = build_base(kind, root / f"{kind}-base")
    if layers != 2:  # keep the first `layers` decoder layers of that base
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
        if getattr(model.config, "layer_types", None) is not None:
            model.config.layer_types = model.config.layer_types[:layers]
        shutil.rmtree(base)
        model.save_pretrained(base)
    save_char_tokenizer(base)
    experts = [build_specialist_same_embeddings(base, root / f"{kind}-{DOMAINS[i]}", seed=200 + i) for i in range(n)]
    return base, experts


def write_domain_data(root: Path, rows: int = 12) -> Path:
    """A directory with <domain>.jsonl for each domain, in that domain's MergeBench columns."""
    root.mkdir(parents=True, exist_ok=True)
    cols = {"instruction": ("instruction", "output"), "math": ("query", "response"),
            "coding": ("instruction", "response"), "multilingual": ("inputs", "targets"),
            "safety": ("prompt", "response")}
    for d, (q, a) in cols.items():
        with open(root / f"{d}.jsonl", "w") as f:
            for i in range(rows):
                row = {q: f"{d} question {i}: what is {i} + {i * 3}?", a: f"{d} answer {i}: {i + i * 3}."}
                if d == "instruction":
                    row["input"] = f"context {i}" if i % 2 else ""
                f.write(json.dumps(row) + "\n")
    return root
