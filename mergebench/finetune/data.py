"""SFT examples: alpaca-style prompt, loss on the response only, padded or packed into fixed blocks.

Rows are {"prompt", "response"} (the tiny family's format; the real datasets are mapped to it by a
loader per domain). Labels are -100 on prompt tokens, so the model learns to answer, not to ask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mergebench.catalog.prompts import format_prompt as _catalog_prompt

IGNORE = -100


def format_prompt(instruction: str, template: str = "alpaca") -> str:
    """The prompt the recipe trains with; generation and statistics must use the very same text."""
    return _catalog_prompt(instruction, template)


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


def encode(tokenizer, prompt: str, response: str, seq_len: int, template: str = "alpaca") -> Example:
    """BOS + prompt + response + EOS, truncated to seq_len; only response and EOS carry a loss."""
    p = tokenizer(format_prompt(prompt, template), add_special_tokens=True)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (p + r)[:seq_len]
    labels = ([IGNORE] * len(p) + r)[:seq_len]
    return Example(ids, labels)


def pad_token_id(tokenizer) -> int:
    """Padding is masked from attention and loss, so a tokenizer without a pad token (Llama 3) pads with
    EOS (and one with neither with id 0)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0


def pad_batch(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; padding is masked from attention and loss."""
    n = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, :len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[i, :len(e.labels)] = torch.tensor(e.labels)
        mask[i, :len(e.input_ids)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def pack(examples: list[Example], seq_len: int, pad_id: int) -> list[Example]:
    """Concatenate examples into seq_len blocks (the paper's packing); the last block is padded.

    As in TRL's default packing, attention is not reset between examples within a block; the loss
    mask still covers only responses.
    """
    blocks: list[Example] = []
    ids: list[int] = []
    labels: list[int] = []
    for e in examples:
        ids += e.input_ids
        labels += e.labels
        while len(ids) >= seq_len:
            blocks.append(Example(ids[:seq_len], labels[:seq_len]))
            ids, labels = ids[seq_len:], labels[seq_len:]
    if ids:
        blocks.append(Example(ids, labels))
    return blocks
