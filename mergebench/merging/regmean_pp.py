"""RegMean++: RegMean layer by layer, with each layer's inputs taken from the already merged layers below.

For decoder layer l and specialist t, the hidden states entering layer l are those of specialist t's
validation samples after the *merged* embeddings and merged layers 0..l−1. They run through specialist
t's own layer l, whose linears' input Grams then drive RegMean for layer l (intra-layer inputs come
from the specialist's layer, as in plain RegMean); the merged layer l then carries the hidden states
on to layer l+1. Parameters outside the decoder's linears are averaged; embeddings and lm_head stay
the base's (the merged set, as for every method).

Memory: one decoder layer at a time. The model is built as a skeleton whose parameters sit on the meta
device (no memory); from the base's checkpoint, read tensor by tensor, only the decoder's own modules
outside its layers (embeddings, final norm, rotary) are materialized up front, since the embeddings
start the hidden states. Every layer's arguments (masks, position embeddings) are recorded without
running any layer. Then, per layer l, the base's layer l (overwritten with the merged weights) and one
specialist's layer l at a time are materialized in fp32 on the compute device; layer l is written to
the output as soon as it is merged and freed before layer l+1 (the writer plans every offset up front,
so the order of writes does not matter). Weights on the device at once: the embeddings plus two layers
(about 4 GB in fp32 for an 8B Llama, against 32 GB for the whole model), never the lm_head; besides
them, each specialist's Grams of the current layer (about 1 GB each at 8B) and the engine's working
set for one tensor. The hidden states of every sample of every specialist at the current layer live in
CPU memory (T × tokens × hidden × 4 bytes: about 50 GB for five 8B specialists at 1000 samples of 600
tokens), each moved to the device only while it is used; they, not the weights, are why an 8B merge
needs a large-memory host.

Supported decoder layers: Llama and Gemma-2 (their layers take the hidden states plus the attention
mask, position embeddings and positions the model prepares, which the pass records once per sample).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import nn

from mergebench.errors import MergeBenchError
from mergebench.merging.datapass.model import GramCollector, decoder_layers, encode_sample, load_tokenizer
from mergebench.merging.engine import Merger, MergeResult
from mergebench.merging.io.checkpoint import Checkpoint
from mergebench.merging.io.writer import ShardedWriter, parse_size

SUPPORTED = ("llama", "gemma2")


def _move(obj: Any, device: torch.device | str, memo: dict[int, torch.Tensor]) -> Any:
    """Tensors inside tuples, lists and dicts moved to `device`; a tensor seen twice is moved once."""
    if isinstance(obj, torch.Tensor):
        if id(obj) not in memo:
            memo[id(obj)] = obj.detach().to(device)
        return memo[id(obj)]
    if isinstance(obj, tuple | list):
        return type(obj)(_move(o, device, memo) for o in obj)
    if isinstance(obj, dict):
        return {k: _move(v, device, memo) for k, v in obj.items()}
    return obj


class _Recorded(Exception):
    """Raised by the last decoder layer's pre-hook: every layer's inputs are recorded, stop the forward."""


def _skeleton(path) -> nn.Module:
    """The base's model with every parameter on the meta device (no memory) and its buffers (rotary
    frequencies, Gemma-2's embedding scale) real: weights are materialized module by module later."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(path)), dtype=torch.float32)
    return model.eval()


class RegMeanPlusPlus(Merger):
    """A Merger whose run() walks the decoder layer by layer instead of streaming tensor by tensor."""

    def run(self) -> MergeResult:
        start = time.time()
        model_type = self.base.config.get("model_type")
        if model_type not in SUPPORTED:
            raise MergeBenchError(f"method regmean_pp supports {', '.join(SUPPORTED)} decoder layers, "
                                  f"not model_type {model_type!r}")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        tokenizer = load_tokenizer(self.base.path)
        model = _skeleton(self.base.path)
        prefix, layers = decoder_layers(model)
        decoder_name = prefix.rpartition(".")[0]
        decoder = model.get_submodule(decoder_name)
        for name, child in list(decoder.named_children()):  # the embeddings and rotary layer 0 needs, the final norm
            if child is not layers:
                setattr(decoder, name, self._materialize(child, self.base, f"{decoder_name}.{name}."))
        merged_set = self._merged_set = set(self.merged)
        max_length = self.hp["max_length"]
        encoded = [[encode_sample(tokenizer, s, max_length).input_ids for s in samples] for samples in self.samples]
        hidden, layer_kwargs = self._record_inputs(decoder, layers, encoded)
        tokens = [sum(len(ids) for ids in enc) for enc in encoded]

        layout = [(n, self.dtype_for(n), self.base.tensors[n].shape) for n in self.names]
        writer = ShardedWriter(self.out, layout, parse_size(self.job.max_shard_size))
        written: set[str] = set()
        try:
            writer.open()  # tensors go to their planned offsets, so each layer is written as soon as it is merged
            for l_idx, skeleton in enumerate(layers):
                written |= self._merge_layer(writer, skeleton, f"{prefix}.{l_idx}.", l_idx, hidden, layer_kwargs,
                                             tokens)
                self.progress("regmean++ layers", l_idx + 1, len(layers))
            rest = [n for n in self.names if n not in written]
            for i, name in enumerate(rest):
                if name not in merged_set:
                    self.copy_tensor(writer, name)
                else:  # merged tensors outside the decoder layers (the final norm): averaged
                    base, tau = self.source.task_vectors(name)
                    out = base + self.spec.fn(tau, self.context(name, None), self.hp)
                    writer.write(name, out.to(self.dtype_for(name)).cpu())
                self.progress("write", i + 1, len(rest))
            seconds = time.time() - start
            manifest = self.manifest(None, seconds, None)
            manifest["data"] = [{"source": s, "domain": d, "samples": len(enc), "tokens": n}
                                for (s, d), enc, n in zip(self.data, encoded, tokens, strict=True)]
            return self.finish(writer, seconds, None, manifest)
        except OSError as e:  # a full disk while writing: say where, leave nothing
            raise writer.failed(e) from None
        except BaseException:
            writer.abort()
            raise

    # --- pieces -------------------------------------------------------------------------------------
    def _merge_layer(self, writer: ShardedWriter, skeleton: nn.Module, lp: str, l_idx: int,
                     hidden: list[list[torch.Tensor]], layer_kwargs, tokens: list[int]) -> set[str]:
        """Merge decoder layer `l_idx` (checkpoint names `lp`…), write it, and carry every specialist's
        hidden states through it (in place). Only this layer and one specialist's are materialized; both
        are freed on return."""
        layer = self._materialize(skeleton, self.base, lp)  # the base's weights, overwritten by the merged ones
        grams = [self._layer_grams(self._materialize(skeleton, expert, lp), lp, hidden[t], layer_kwargs[t], l_idx)
                 for t, expert in enumerate(self.experts)]
        names = set()
        with torch.no_grad():
            for pname, p in layer.named_parameters():
                name = lp + pname
                names.add(name)
                if name not in self._merged_set:
                    self.copy_tensor(writer, name)
                    continue
                base, tau = self.source.task_vectors(name)
                ctx = self.context(name, None)
                if name in grams[0]:
                    ctx.stats = [g[name] for g in grams]
                    ctx.stats_meta = [{"tokens": n} for n in tokens]
                p.copy_(base + self.spec.fn(tau, ctx, self.hp))
                writer.write(name, p.to(self.dtype_for(name)).cpu())
            for t in range(len(self.experts)):  # carry every specialist's data through the merged layer
                hidden[t] = [self._call(layer, h, layer_kwargs[t][s][l_idx]).cpu() for s, h in enumerate(hidden[t])]
        return names

    def _record_inputs(self, decoder: nn.Module, layers: nn.ModuleList, encoded: list[list[list[int]]]):
        """Per specialist and sample: the hidden states entering layer 0 (the base's = the merged
        embeddings) and the keyword arguments (masks, position embeddings) the model passes each layer.

        The layers are still meta skeletons: for this pass each one returns its input unchanged (the
        model prepares every layer's arguments before the first runs, so they do not depend on the
        layers' outputs), and the last one's pre-hook stops the forward before the final norm."""
        captured: dict[int, tuple[torch.Tensor, dict[str, Any]]] = {}

        def hook_for(idx: int):
            def hook(module, args, kwargs):
                h = args[0] if args else kwargs["hidden_states"]
                captured[idx] = (h, {k: v for k, v in kwargs.items() if k != "hidden_states"})
                if idx == len(layers) - 1:
                    raise _Recorded
            return hook

        def passthrough(hidden_states, *args, **kwargs):
            return hidden_states

        handles = [layer.register_forward_pre_hook(hook_for(i), with_kwargs=True) for i, layer in enumerate(layers)]
        for layer in layers:
            layer.forward = passthrough
        hidden: list[list[torch.Tensor]] = []
        layer_kwargs: list[list[list[dict[str, Any]]]] = []
        try:
            with torch.no_grad():
                for enc in encoded:
                    hs, kws = [], []
                    for ids in enc:
                        captured.clear()
                        try:
                            decoder(input_ids=torch.tensor([ids], device=self.device), use_cache=False)
                        except _Recorded:
                            pass
                        memo: dict[int, torch.Tensor] = {}
                        hs.append(captured[0][0].detach().cpu())
                        kws.append([_move(captured[i][1], "cpu", memo) for i in range(len(layers))])
                    hidden.append(hs)
                    layer_kwargs.append(kws)
        finally:
            for h in handles:
                h.remove()
            for layer in layers:
                del layer.forward
        return hidden, layer_kwargs

    def _materialize(self, skeleton: nn.Module, ckpt: Checkpoint, prefix: str) -> nn.Module:
        """A copy of `skeleton` (parameters on the meta device) holding `ckpt`'s tensors `prefix` + name,
        fp32 on the compute device."""
        own = copy.deepcopy(skeleton)
        for pname, p in list(own.named_parameters()):
            name = prefix + pname
            if name not in ckpt.tensors:
                raise MergeBenchError(f"{ckpt.path}: tensor {name} is missing (the model needs it)")
            owner, _, attr = pname.rpartition(".")
            value = ckpt.read(name).reshape(p.shape).to(self.device)
            setattr(own.get_submodule(owner), attr, nn.Parameter(value, requires_grad=False))
        return own.to(self.device)

    def _call(self, layer: nn.Module, h: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        out = layer(h.to(self.device), **_move(kwargs, self.device, {}))
        return out[0] if isinstance(out, tuple) else out

    def _layer_grams(self, layer: nn.Module, prefix: str, hidden: list[torch.Tensor],
                     kwargs: list[list[dict[str, Any]]], l_idx: int) -> dict[str, torch.Tensor]:
        """Input Grams of the layer's linears over all samples, by checkpoint weight name (shared
        inputs resolved to the same matrix)."""
        linears = {f"{prefix}{n}.weight": m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
        collector = GramCollector(linears)
        try:
            with torch.no_grad():
                for s, h in enumerate(hidden):
                    self._call(layer, h, kwargs[s][l_idx])
                    collector.end_pass()
        finally:
            collector.remove()
        out = dict(collector.grams)
        out.update({n: collector.grams[o] for n, o in collector.aliases.items()})
        return out
