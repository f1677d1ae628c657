"""SFT examples: alpaca-style prompt, loss on the response only, padded or packed into fixed blocks.

Rows are {"prompt", "response"} (the tiny family's format; the real datasets are mapped to it by a
loader per domain). Tokenization, padding and the loss are `mergebench.tokens`, shared with the merging
methods' data passes; what is the trainer's own is the template and the packing.
"""

from __future__ import annotations

from mergebench.catalog.prompts import format_prompt as _catalog_prompt
from mergebench.tokens import Example
from mergebench.tokens import encode as encode_text


def format_prompt(instruction: str, template: str = "alpaca") -> str:
    """The prompt the recipe trains with; generation and statistics must use the very same text."""
    return _catalog_prompt(instruction, template)


def encode(tokenizer, prompt: str, response: str, seq_len: int, template: str = "alpaca") -> Example:
    """A row's instruction formatted with the recipe's template, then encoded as every data pass encodes
    (mergebench.tokens): BOS + prompt + response + EOS, truncated, loss on the response and EOS only."""
    return encode_text(tokenizer, format_prompt(prompt, template), response, seq_len)


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
