"""RegMean++: RegMean layer by layer, with each layer's inputs taken from the already merged layers below.

For decoder layer l and specialist t, the hidden states entering layer l are those of specialist t's
validation samples after the *merged* embeddings and merged layers 0..l−1. They run through specialist
t's own layer l, whose linears' input Grams then drive RegMean for layer l (intra-layer inputs come
from the specialist's layer, as in plain RegMean); the merged layer l then carries the hidden states
on to layer l+1. Parameters outside the decoder's linears are averaged; embeddings and lm_head stay
the base's (the merged set, as for every method).

Memory (the choice this kit makes): the whole merged model lives on the compute device in fp32 (its
layers are overwritten with merged weights as the pass climbs), plus one specialist layer at a time,
read tensor by tensor from its checkpoint; the hidden states of every sample of every specialist at
the current layer live in CPU memory (T × tokens × hidden × 4 bytes: about 50 GB for five 8B
specialists at 1000 samples of 600 tokens), each moved to the device only while it is used. This fits
the tiny and the 2B–3B models comfortably; 8B needs a large-memory host.

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
from mergebench.merging.engine import Merger, MergeResult
from mergebench.merging.stats import GramCollector, decoder_layers, encode, load_model, load_tokenizer
from mergebench.merging.writer import ShardedWriter, parse_size

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
        model = load_model(self.base.path, self.device)
        prefix, layers = decoder_layers(model)
        params = dict(model.named_parameters())
        merged_set = set(self.merged)
        max_length = self.hp["max_length"]
        encoded = [[encode(tokenizer, s, max_length)[0] for s in samples] for samples in self.samples]
        hidden, layer_kwargs = self._record_inputs(model, layers, encoded)
        tokens = [sum(len(ids) for ids in enc) for enc in encoded]

        for l_idx, layer in enumerate(layers):
            names = [n for n in self.names if n.startswith(f"{prefix}.{l_idx}.")]
            grams: list[dict[str, torch.Tensor]] = []
            for t, expert in enumerate(self.experts):
                own = self._expert_layer(layer, expert, f"{prefix}.{l_idx}.")
                grams.append(self._layer_grams(own, f"{prefix}.{l_idx}.", hidden[t], layer_kwargs[t], l_idx))
                del own
            with torch.no_grad():
                for name in names:
                    if name not in merged_set:
                        continue
                    base, tau = self._task_vectors(name)
                    ctx = self._ctx(name, None)
                    if name in grams[0]:
                        ctx.stats = [g[name] for g in grams]
                        ctx.stats_meta = [{"tokens": n} for n in tokens]
                    params[name].copy_(base + self.spec.fn(tau, ctx, self.hp))
                for t in range(len(self.experts)):  # carry every specialist's data through the merged layer
                    hidden[t] = [self._call(layer, h, layer_kwargs[t][s][l_idx]).cpu()
                                 for s, h in enumerate(hidden[t])]
            self.progress("regmean++ layers", l_idx + 1, len(layers))

        layout = [(n, self._dtype_for(n), self.base.tensors[n].shape) for n in self.names]
        writer = ShardedWriter(self.out, layout, parse_size(self.job.max_shard_size))
        layer_prefix = f"{prefix}."
        try:
            writer.open()
            for i, name in enumerate(self.names):
                if name not in merged_set:
                    self._copy(writer, name)
                elif name.startswith(layer_prefix) and name in params:
                    writer.write(name, params[name].detach().to(self._dtype_for(name)).cpu())
                else:  # merged tensors outside the decoder layers (the final norm): averaged
                    base, tau = self._task_vectors(name)
                    out = base + self.spec.fn(tau, self._ctx(name, None), self.hp)
                    writer.write(name, out.to(self._dtype_for(name)).cpu())
                self.progress("write", i + 1, len(self.names))
            seconds = time.time() - start
            manifest = self._manifest(None, seconds, None)
            manifest["data"] = [{"source": s, "domain": d, "samples": len(enc), "tokens": n}
                                for (s, d), enc, n in zip(self.data, encoded, tokens, strict=True)]
            return self._finish(writer, seconds, None, manifest)
        except OSError as e:  # a full disk while writing: say where, leave nothing
            raise writer.failed(e) from None
        except BaseException:
            writer.abort()
            raise

    # --- pieces -------------------------------------------------------------------------------------
    def _record_inputs(self, model: nn.Module, layers: nn.ModuleList, encoded: list[list[list[int]]]):
        """Per specialist and sample: the hidden states entering layer 0 (the base's = the merged
        embeddings) and the keyword arguments (masks, position embeddings) the model passes each layer."""
        captured: dict[int, tuple[torch.Tensor, dict[str, Any]]] = {}

        def hook_for(idx: int):
            def hook(module, args, kwargs):
                h = args[0] if args else kwargs["hidden_states"]
                captured[idx] = (h, {k: v for k, v in kwargs.items() if k != "hidden_states"})
            return hook

        handles = [layer.register_forward_pre_hook(hook_for(i), with_kwargs=True) for i, layer in enumerate(layers)]
        hidden: list[list[torch.Tensor]] = []
        layer_kwargs: list[list[list[dict[str, Any]]]] = []
        try:
            with torch.no_grad():
                for enc in encoded:
                    hs, kws = [], []
                    for ids in enc:
                        captured.clear()
                        model.model(input_ids=torch.tensor([ids], device=self.device), use_cache=False)
                        memo: dict[int, torch.Tensor] = {}
                        hs.append(captured[0][0].detach().cpu())
                        kws.append([_move(captured[i][1], "cpu", memo) for i in range(len(layers))])
                    hidden.append(hs)
                    layer_kwargs.append(kws)
        finally:
            for h in handles:
                h.remove()
        return hidden, layer_kwargs

    def _expert_layer(self, layer: nn.Module, expert, prefix: str) -> nn.Module:
        """A copy of the layer holding specialist `expert`'s weights, read from its checkpoint."""
        own = copy.deepcopy(layer)
        with torch.no_grad():
            for pname, p in own.named_parameters():
                name = prefix + pname
                if name not in expert.tensors:
                    raise MergeBenchError(f"{expert.path}: tensor {name} is missing (the base has it)")
                p.copy_(expert.read(name).reshape(p.shape).to(p.device))
        return own

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
