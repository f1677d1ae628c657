"""The statistics pass of the data-dependent methods: Gram matrices (RegMean), diagonal Fisher, and the
trained masks of Localize-and-Stitch.

For one specialist and its validation samples, the Hugging Face model runs in fp32 (on CUDA when
present, else the CPU):

- **gram**: a forward pre-hook on every `nn.Linear` inside the decoder layers accumulates G = XᵀX
  (fp32, summed over every token of every sample, prompt and response, padding excluded) of the
  linear's input X [tokens, in]. Linears that read the very same tensor (q/k/v read the attention
  norm's output, gate/up the MLP norm's output) share one Gram, stored once under the first one's
  weight name; the manifest's `aliases` maps the others to it.
- **fisher**: the diagonal empirical Fisher F = (1/N) Σ_n (∂L_n/∂θ)², one backward pass per sample,
  where L_n is the mean next-token negative log-likelihood over sample n's response tokens (prompt
  tokens are context only). Samples whose response is truncated away entirely are skipped (counted).
- **mask**: Localize-and-Stitch's masks, trained with the weights frozen on the model θ0 + σ(S)⊙τ
  (mergebench/merging/datapass/masks.py); needs the base (`base`) as well as the specialist, and writes one
  boolean mask per merged tensor.

Memory: the model in fp32 plus, for gram, one [in, in] fp32 matrix per distinct linear input (about
1 GB per layer of an 8B Llama: keep `--device cuda` on an 80 GB card or use the CPU), for fisher the
gradients and one fp32 accumulator per parameter (three model copies in all).

Output, written to a temporary sibling and renamed into place when complete: `grams.safetensors`,
`fisher.safetensors` or `masks.safetensors` keyed by checkpoint tensor names, and `stats_manifest.json` naming the model (path,
file fingerprints, architecture), the data (source, domain, seed, samples, tokens) and the variant.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mergebench.errors import MergeBenchError
from mergebench.merging.datapass.model import (
    GramCollector,
    encode_sample,
    layer_linears,
    load_model,
    load_tokenizer,
)
from mergebench.merging.datapass.samples import describe_source, load_samples
from mergebench.merging.device import resolve_device
from mergebench.merging.fingerprint import fingerprint
from mergebench.merging.io.checkpoint import Checkpoint
from mergebench.merging.io.stats_store import CONFIG_FIELDS, KINDS, write_stats
from mergebench.tokens import IGNORE, Example, pad_batch, pad_token_id, response_nll

FISHER_VARIANT = ("empirical diagonal Fisher: mean over samples of the squared gradient of the sample's mean "
                  "next-token NLL over its response tokens")

ProgressFn = Callable[[int, int], None]  # (samples done, total)


@dataclass
class StatsJob:
    kind: str
    model: str
    data: str
    samples: int
    out: str
    seed: int = 0
    domain: str | None = None  # the data domain when `data` is a directory of per-domain files
    max_length: int = 2048
    batch_size: int = 8  # gram and mask; fisher needs one backward pass per sample
    device: str = "auto"
    tokenizer: str | None = None  # default: the specialist's (gram, fisher) or the base's (mask)
    force: bool = False
    template: str = "alpaca"  # the prompt template the specialist was finetuned with
    base: str | None = None  # mask only: the base model θ0 the masks select τ = θ_t − θ0 over
    settings: dict[str, Any] = field(default_factory=dict)  # mask only: see masks.MASK_PARAMS


@dataclass
class StatsResult:
    out: Path
    samples: int
    tokens: int
    seconds: float
    manifest: dict[str, Any]


# --- the passes -------------------------------------------------------------------------------------


def gram_pass(model: nn.Module, examples: list[Example], pad: int, progress: ProgressFn | None = None,
              batch_size: int = 8) -> tuple[dict[str, torch.Tensor], dict[str, str], int]:
    """Gram matrices of every decoder linear's input over `examples` (prompt and response tokens alike);
    returns (grams by owner weight name, aliases, token count)."""
    device = next(model.parameters()).device
    collector = GramCollector(layer_linears(model))
    tokens = 0
    try:
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                batch = pad_batch(examples[start:start + batch_size], pad)
                ids, mask = batch["input_ids"], batch["attention_mask"]
                collector.mask = mask.reshape(-1).bool().to(device)
                model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
                collector.end_pass()
                tokens += int(mask.sum())
                if progress:
                    progress(min(start + batch_size, len(examples)), len(examples))
    finally:
        collector.remove()
    return collector.grams, collector.aliases, tokens


def fisher_pass(model: nn.Module, examples: list[Example],
                progress: ProgressFn | None = None) -> tuple[dict[str, torch.Tensor], int, int, int]:
    """Diagonal empirical Fisher of every parameter; returns (fisher by name, samples used, skipped,
    response tokens)."""
    device = next(model.parameters()).device
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    used = skipped = response_tokens = 0
    for i, example in enumerate(examples):
        labels = torch.tensor(example.labels)
        n_resp = int((labels[1:] != IGNORE).sum())
        if n_resp == 0:
            skipped += 1
        else:
            model.zero_grad(set_to_none=True)
            logits = model(input_ids=torch.tensor([example.input_ids], device=device), use_cache=False).logits[0]
            response_nll(logits, labels.to(device), reduction="mean").backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n].add_(p.grad.detach().float().square())
            used += 1
            response_tokens += n_resp
        if progress:
            progress(i + 1, len(examples))
    model.zero_grad(set_to_none=True)
    if used == 0:
        raise MergeBenchError("no sample has a response token left after truncation; raise --max-length")
    for f in fisher.values():
        f.div_(used)
    return fisher, used, skipped, response_tokens


# --- the job ----------------------------------------------------------------------------------------


def compute_stats(job: StatsJob | None = None, progress: ProgressFn | None = None, **fields: Any) -> StatsResult:
    """Run one statistics pass and write its directory atomically; give a StatsJob or its fields."""
    start = time.time()
    if job is None:
        try:
            job = StatsJob(**fields)
        except TypeError as e:
            raise MergeBenchError(f"compute_stats: {e}") from None
    elif fields:
        raise MergeBenchError("compute_stats: give a StatsJob or keyword fields, not both")
    if job.kind not in KINDS:
        raise MergeBenchError(f"statistics kind {job.kind!r}: expected one of {', '.join(KINDS)}")
    if job.max_length < 2:
        raise MergeBenchError(f"--max-length {job.max_length}: must be at least 2")
    if job.batch_size < 1:
        raise MergeBenchError(f"--batch-size {job.batch_size}: must be at least 1")
    if job.kind == "mask":
        from mergebench.merging.datapass.masks import mask_settings, train_masks

        hp = mask_settings(job.settings)
        if not job.base:
            raise MergeBenchError("statistics kind mask needs the base model (--base): masks select entries of "
                                  "τ = specialist − base")
    elif job.settings or job.base:
        raise MergeBenchError(f"statistics kind {job.kind} takes no {'--set' if job.settings else '--base'} "
                              "(settings and a base are for --kind mask)")
    out = Path(job.out).expanduser()
    if out.exists() and not job.force:
        raise MergeBenchError(f"{out}: output directory already exists (use --force to replace it)")
    ckpt = Checkpoint(job.model)
    base = Checkpoint(job.base) if job.kind == "mask" else None
    samples = load_samples(job.data, job.samples, job.seed, job.domain, job.template)
    device = resolve_device(job.device)
    tokenizer_path = job.tokenizer or (base or ckpt).path  # masked models read the data with the base's embeddings
    tokenizer = load_tokenizer(tokenizer_path)
    encoded = [encode_sample(tokenizer, s, job.max_length) for s in samples]

    manifest: dict[str, Any] = {
        "kind": job.kind,
        "model": str(ckpt.path),
        "model_files": {f.name: fingerprint(f) for f in ckpt.files},
        "architecture": ckpt.config.get("architectures"),
        "config": {k: ckpt.config.get(k) for k in CONFIG_FIELDS},
        "data": describe_source(job.data, job.domain),
        "domain": job.domain or (job.data if describe_source(job.data).startswith("MergeBench/") else None),
        "seed": job.seed,
        "samples": len(samples),
        "max_length": job.max_length,
        "template": job.template,
        "tokenizer": str(tokenizer_path),
    }
    if job.kind == "gram":
        grams, aliases, tokens = gram_pass(load_model(ckpt.path, device), encoded,
                                           pad_token_id(tokenizer), progress, job.batch_size)
        tensors = grams
        manifest.update(tokens=tokens, aliases=aliases, linears=sorted([*grams, *aliases]))
    elif job.kind == "mask":
        tensors, record = train_masks(base, ckpt, encoded, hp, device, job.batch_size, pad_token_id(tokenizer), progress)
        manifest.update(base=str(base.path), base_files={f.name: fingerprint(f) for f in base.files},
                        settings=hp, tokens=sum(len(e.input_ids) for e in encoded), **record)
    else:
        tensors, used, skipped, tokens = fisher_pass(load_model(ckpt.path, device), encoded, progress)
        manifest.update(tokens=sum(len(e.input_ids) for e in encoded), response_tokens=tokens, samples_used=used,
                        samples_skipped=skipped, variant=FISHER_VARIANT,
                        mean=float(sum(f.double().sum() for f in tensors.values())
                                   / sum(f.numel() for f in tensors.values())))
    from mergebench import __version__

    manifest.update(kit_version=__version__, device=str(device), torch=torch.__version__,
                    seconds=round(time.time() - start, 3), finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    write_stats(out, KINDS[job.kind].file, {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, manifest)
    return StatsResult(out, len(samples), manifest["tokens"], time.time() - start, manifest)


