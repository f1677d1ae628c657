"""Trained masks of Localize-and-Stitch (He et al. 2025): the `mask` kind of `mergebench stats`.

For one specialist θ_t of base θ0 (τ = θ_t − θ0, fp32), every merged tensor gets mask logits S of its
own shape; the weights stay frozen and only S is trained, on the model

    θ(S) = θ0 + σ(S) ⊙ τ   on the merged tensors (embeddings and lm_head stay θ0, as in the merge).

- **Initialisation**: S = +sigmoid_bias on the dataless mask (|τ| ≥ the int(sparsity·d)-th largest |τ|
  over the ranked set, computed by the merge engine's own exact global threshold) and −sigmoid_bias
  elsewhere.
- **Objective**: L(S) = (1/N) Σ_n L_n(θ(S)) + l1·Σ σ(S), where L_n is the mean next-token NLL over
  sample n's response tokens (and EOS), the loss the specialists were finetuned with, on the
  specialist's own validation samples; samples truncated to no response token are skipped (counted).
- **Optimisation**: one epoch is one full pass over the samples that accumulates the exact gradient
  of L at the current S, followed by one plain SGD step S ← S − lr·∂L/∂S, with
  ∂L/∂S = (∂L/∂θ ⊙ τ + l1) ⊙ σ(S)(1 − σ(S)). So the result does not depend on the sample order or
  the batch size (up to float rounding), and epochs = 1 (the reference) is a single step.
- **Binarisation**: mask = σ(S) > 0.5, i.e. S > 0 (the reference rounds σ(S), and 0.5 rounds to 0).

With lr = 0 the masks are exactly the dataless masks. Memory: the base model in fp32, its gradients
and S (three fp32 copies of the merged tensors) plus activations; θ0 and τ are re-read tensor by
tensor from the memory-mapped checkpoints whenever they are needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mergebench.errors import MergeBenchError
from mergebench.merging.io.checkpoint import Checkpoint
from mergebench.merging.methods.spec import Param, check_settings, threshold_mask
from mergebench.tokens import Example, pad_batch, response_nll

MASK_PARAMS: tuple[Param, ...] = (
    Param("sparsity", float, 0.1, "fraction of τ the initial (dataless) mask keeps", low=0.0, high=1.0),
    Param("sigmoid_bias", float, 3.0, "initial logits: +bias inside the initial mask, −bias outside (> 0)"),
    Param("lr", float, 1e8, "SGD learning rate of the mask logits", low=0.0),
    Param("epochs", int, 1, "passes over the samples, one gradient step each", low=0),
    Param("l1", float, 0.0, "weight of the sparsity penalty l1·Σ σ(S) added to the loss", low=0.0),
    Param("threshold_set", str, "reference",
          "entries the initial mask's threshold ranks: reference = every tensor whose name lacks 'embed', "
          "merged = only the merged tensors", choices=("reference", "merged")),
)

ProgressFn = Callable[[int, int], None]


def mask_settings(given: dict[str, Any]) -> dict[str, Any]:
    """The mask training's settings, validated and completed with the reference defaults."""
    hp = check_settings("mask statistics", MASK_PARAMS, given)
    if hp["sigmoid_bias"] <= 0:
        raise MergeBenchError(f"mask statistics: setting sigmoid_bias={hp['sigmoid_bias']} must be positive (the "
                              "initial logits ±bias must tell the initial mask apart)")
    return hp


def train_masks(base: Checkpoint, specialist: Checkpoint, encoded: list[Example], hp: dict[str, Any],
                device: torch.device, batch_size: int, pad: int,
                progress: ProgressFn | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train one specialist's masks; returns (bool mask per merged tensor, on the CPU; what to record)."""
    from mergebench.merging.datapass.model import load_model
    from mergebench.merging.methods.localize_stitch import LOCALIZE_STITCH
    from mergebench.merging.plan import MergePlan
    from mergebench.merging.thresholds import global_thresholds

    # The merge's own validated inputs: θ0 and τ read exactly as a merge reads them, base and specialist
    # checked against each other, and the tensors the dataless threshold ranks.
    settings = LOCALIZE_STITCH.settings({"sparsity": hp["sparsity"], "threshold_set": hp["threshold_set"]})
    plan = MergePlan.build(LOCALIZE_STITCH, settings, str(base.path), [str(specialist.path)], device=device)
    names = plan.merged
    threshold = global_thresholds(plan.source, plan.ranked, LOCALIZE_STITCH, settings)
    model = load_model(base.path, device)
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise MergeBenchError(f"{base.path}: tensor {missing[0]} is not a parameter of the loaded "
                              f"{model.__class__.__name__}, so no mask can be trained for it")
    for p in model.parameters():
        p.requires_grad_(False)
    logits: dict[str, torch.Tensor] = {}
    for name in names:
        inside = threshold_mask(plan.source.task_vectors(name)[1], threshold)[0]
        logits[name] = torch.where(inside, hp["sigmoid_bias"], -hp["sigmoid_bias"]).float()
        params[name].requires_grad_(True)
    initial = {n: s > 0 for n, s in logits.items()}

    used = [e for e in encoded if e.response_start < len(e.input_ids)]  # a response token to predict
    if hp["epochs"] and not used:
        raise MergeBenchError("no sample has a response token left after truncation; raise --max-length")
    batches = [used[i:i + batch_size] for i in range(0, len(used), batch_size)]
    losses = []
    for epoch in range(hp["epochs"]):
        with torch.no_grad():
            for name in names:
                theta0, tau = plan.source.task_vectors(name)
                params[name].copy_(theta0 + torch.sigmoid(logits[name]) * tau[0])
                params[name].grad = None
        total = 0.0
        for b, chunk in enumerate(batches):
            batch = {k: v.to(device) for k, v in pad_batch(chunk, pad).items()}
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
            loss = response_nll(out, batch["labels"]).sum() / len(used)
            loss.backward()
            total += float(loss.detach())
            if progress:
                progress(epoch * len(batches) + b + 1, hp["epochs"] * len(batches))
        if not torch.isfinite(torch.tensor(total)):
            raise MergeBenchError(f"{specialist.path}: the masked model's loss is not finite in epoch {epoch + 1}")
        losses.append(total)
        with torch.no_grad():
            for name in names:
                s = logits[name]
                slope = torch.sigmoid(s) * (1 - torch.sigmoid(s))
                grad = params[name].grad
                grad = plan.source.task_vectors(name)[1][0] * (grad if grad is not None else 0.0) + hp["l1"]
                s -= hp["lr"] * grad * slope
    masks = {n: (s > 0).cpu().contiguous() for n, s in logits.items()}
    kept = sum(int(m.sum()) for m in masks.values())
    entries = sum(m.numel() for m in masks.values())
    record = {
        "masked_tensors": len(names),
        "masked_entries": entries,
        "ranked_entries": sum(plan.base.tensors[n].numel for n in plan.ranked),
        "initial_threshold": float(threshold[0]),
        "kept_initial": sum(int(m.sum()) for m in initial.values()),
        "kept": kept,
        "kept_fraction": kept / max(entries, 1),
        "switched_on": sum(int((masks[n] & ~initial[n].cpu()).sum()) for n in names),
        "switched_off": sum(int((~masks[n] & initial[n].cpu()).sum()) for n in names),
        "relaxed_loss_per_epoch": losses,
        "samples_used": len(used),
        "samples_skipped": len(encoded) - len(used),
        "response_tokens": sum(len(e.input_ids) - e.response_start for e in used),
    }
    return masks, record
