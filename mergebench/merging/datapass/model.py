"""Running a Hugging Face model over validation samples: what the statistics pass, Localize-and-Stitch's
mask training and RegMean++'s layer-by-layer merge share (load, tokenize, the decoder's layers and
linears, Gram accumulation by hooks). Tokens, padding and the response NLL are `mergebench.tokens`,
the very code finetuning trains with. Nothing here knows a merging method or writes a file."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mergebench.errors import MergeBenchError
from mergebench.merging.datapass.samples import Sample
from mergebench.tokens import Example, encode


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder's layer list and its qualified name (`model.layers` for Llama and Gemma-2)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] == "layers" and len(module) > 0:
            return name, module
    raise MergeBenchError(f"{model.__class__.__name__}: no decoder layer list (`layers`) found")


def layer_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear inside the decoder layers, by its weight's checkpoint name, in module order."""
    prefix, layers = decoder_layers(model)
    return {f"{prefix}.{name}.weight": m for name, m in layers.named_modules() if isinstance(m, nn.Linear)}


class GramCollector:
    """Forward pre-hooks that add XᵀX of each linear's input into fp32 accumulators.

    Two linears share a Gram when the second is called with the identical tensor object the previous
    hooked linear received (q/k/v, gate/up); sharing is decided on the first forward pass and then fixed.
    `mask` (bool, one entry per token of the batch) excludes padding.
    """

    def __init__(self, linears: dict[str, nn.Linear]):
        self.linears = linears
        self.grams: dict[str, torch.Tensor] = {}
        self.aliases: dict[str, str] = {}  # weight name -> the weight name its Gram is stored under
        self.mask: torch.Tensor | None = None
        self._last: tuple[torch.Tensor, str] | None = None
        self._handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in linears.items()]

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0]
            if name not in self.grams and name not in self.aliases:  # first sight: shared or own?
                if self._last is not None and self._last[0] is x:
                    self.aliases[name] = self._last[1]
                else:
                    self.grams[name] = torch.zeros(x.shape[-1], x.shape[-1], dtype=torch.float32, device=x.device)
            self._last = (x, self.aliases.get(name, name))
            if name in self.aliases:
                return
            rows = x.detach().reshape(-1, x.shape[-1]).float()
            if self.mask is not None:
                rows = rows[self.mask]
            self.grams[name].addmm_(rows.T, rows)

        return hook

    def end_pass(self) -> None:
        self._last = None  # never match across forward passes

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._last = None


# --- tokenization -----------------------------------------------------------------------------------


def encode_sample(tokenizer, sample: Sample, max_length: int) -> Example:
    """A validation sample's tokens and labels, exactly as finetuning encodes a training row."""
    return encode(tokenizer, sample.prompt, sample.response, max_length)


def sample_ids(tokenizer, sample: Sample, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + response (+ EOS), truncated, and the index where the response starts."""
    example = encode_sample(tokenizer, sample, max_length)
    return example.input_ids, example.response_start


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds for a missing tokenizer
        raise MergeBenchError(f"{path}: cannot load a tokenizer ({e.__class__.__name__}); give --tokenizer DIR") from None


def load_model(path: Path, device: torch.device) -> nn.Module:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return model.to(device).eval()
