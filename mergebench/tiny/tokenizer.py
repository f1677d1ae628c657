"""A byte-level BPE tokenizer for the tiny family, trained on the synthetic corpus itself.

Digits are split one per token (as Llama-3 and Gemma do) so arithmetic sees each digit; the result is
saved as a plain Hugging Face fast tokenizer that `AutoTokenizer.from_pretrained` loads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = (PAD, BOS, EOS)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> Tokenizer:
    """Byte-level BPE over `texts`; every byte stays encodable, so no input is ever out of vocabulary."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(sorted(set(texts)), trainer=trainer)
    bos = tok.token_to_id(BOS)
    # The BOS is added here, not by the training code, so generation and training see the same ids.
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, bos)])
    return tok


def save_tokenizer(tok: Tokenizer, out: Path, model_max_length: int = 256) -> None:
    """Write tokenizer.json and a tokenizer_config.json naming bos/eos/pad, as transformers expects."""
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
        "add_bos_token": True, "padding_side": "left", "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2, sort_keys=True) + "\n")


def load_tokenizer(path: Path):
    """The saved tokenizer through transformers, the way every consumer of the family will load it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
