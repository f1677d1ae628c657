"""Token ids of (prompt, response) examples: encoding, padding and the response NLL, defined once.

Finetuning trains a specialist on these tokens and loss; the data passes of the merging methods (Gram,
Fisher, Localize-and-Stitch's masks, RegMean++) read the same specialist's validation samples. A
statistic taken on other tokens than the ones the specialist learned (another EOS rule, another
truncation, another notion of "response token") would silently be a statistic of something else, so
both sides import this module instead of keeping their own copies.

An example is BOS + prompt + response + EOS, truncated to a maximum length. Labels are the token ids
on the response and EOS and IGNORE on the prompt, so the loss is the model's answer, not the question;
padding is masked from attention and carries IGNORE labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: The label of a token that carries no loss (the prompt, padding): cross_entropy's ignore_index.
IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def response_start(self) -> int:
        """Index of the first response token (len(input_ids) when truncation left none). Only for an
        example from `encode`: a packed block interleaves several prompts."""
        return next((i for i, label in enumerate(self.labels) if label != IGNORE), len(self.input_ids))


def encode(tokenizer, prompt: str, response: str, max_length: int) -> Example:
    """BOS + prompt + response + EOS (when the tokenizer has one), truncated to max_length; only the
    response and EOS carry labels. `prompt` is the already formatted prompt text."""
    p = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    r = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        r.append(tokenizer.eos_token_id)
    return Example((p + r)[:max_length], ([IGNORE] * len(p) + r)[:max_length])


def pad_token_id(tokenizer) -> int:
    """Padding is masked from attention and loss, so a tokenizer without a pad token (Llama 3) pads with
    EOS (and one with neither with id 0)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0


def pad_batch(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input_ids, labels (IGNORE on padding) and attention_mask (1 on
    real tokens). With right padding causal attention never sees the pads."""
    n = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, :len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[i, :len(e.labels)] = torch.tensor(e.labels)
        mask[i, :len(e.input_ids)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def response_nll(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "per_sample") -> torch.Tensor:
    """Next-token NLL over the labelled tokens (position j predicts token j + 1), in fp32.

    `logits` [B, S, V] with `labels` [B, S], or one sample's [S, V] with [S]. Reductions:
    - "per_sample": each sample's mean over its labelled tokens, [B] (0 where truncation left none);
    - "sum": the total over every labelled token of the batch (finetuning divides by the global batch's
      token count itself, so micro-batches and ranks add up to the same loss);
    - "mean": the mean over every labelled token (one sample's loss, as the Fisher pass takes it).
    """
    shifted = logits[..., :-1, :].float()
    targets = labels[..., 1:]
    if reduction == "sum":
        return torch.nn.functional.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1),
                                                 ignore_index=IGNORE, reduction="sum")
    if reduction == "mean":
        return torch.nn.functional.cross_entropy(shifted, targets, ignore_index=IGNORE)
    if reduction != "per_sample":
        raise ValueError(f"response_nll: unknown reduction {reduction!r}")
    nll = torch.nn.functional.cross_entropy(shifted.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
    return nll.sum(1) / (targets != IGNORE).sum(1).clamp(min=1)
