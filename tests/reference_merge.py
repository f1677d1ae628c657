"""Slow, plain reference implementations of every method: whole models in memory, flattened vectors,
global kthvalue. The engine must agree with these; nothing here is shared with the engine's code
except DARE's documented seeding rule."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from mergebench.merging.methods.dare import keep_mask, mask_seed


def load_all(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        with safe_open(f, "pt") as fh:
            for k in fh.keys():
                out[k] = fh.get_tensor(k).float()
    return out


def is_merged(name: str) -> bool:
    return "embed" not in name and not name.startswith("lm_head")


def flatten(models, names):
    return torch.stack([torch.cat([m[n].flatten() for n in names]) for m in models])


def unflatten(vec, base, names):
    out, pos = {}, 0
    for n in names:
        k = base[n].numel()
        out[n] = vec[pos:pos + k].reshape(base[n].shape)
        pos += k
    return out


def reference(method: str, base_dir: Path, expert_dirs: list[Path], hp: dict) -> dict[str, torch.Tensor]:
    """Merged tensors (the merged set only) computed the slow way."""
    base = load_all(base_dir)
    experts = [load_all(e) for e in expert_dirs]
    merged_names = sorted(n for n in base if is_merged(n))
    ranked = sorted(n for n in base if "embed" not in n)  # the reference's flattened set
    tau = {n: torch.stack([e[n] - base[n] for e in experts]) for n in base if "embed" not in n}
    out: dict[str, torch.Tensor] = {}
    if method in ("ties", "localize_stitch"):
        flat = torch.stack([torch.cat([tau[n][t].flatten() for n in ranked]) for t in range(len(experts))])
        d = flat.shape[1]
        absf = flat.abs()
        if method == "ties":
            kth = absf.kthvalue(d - int(d * hp["K"]), dim=1, keepdim=True).values
            trimmed = flat * (absf >= kth)
            sign = torch.sign(trimmed.sum(0))
            sign[sign == 0] = torch.sign(sign.sum())
            keep = torch.where(sign > 0, trimmed > 0, trimmed < 0)
            merged = (trimmed * keep).sum(0)
            if hp.get("aggregation", "sum") == "mean":
                merged = merged / keep.sum(0).clamp(min=1)
            merged = merged * hp["lambda"]
        else:
            k = int(d * hp["sparsity"])
            kth = absf.kthvalue(d - k + 1, dim=1, keepdim=True).values
            masks = absf >= kth
            merged = (flat * masks).sum(0) / masks.sum(0).clamp(min=1)
        per = unflatten(merged, base, ranked)
        return {n: base[n] + per[n] for n in merged_names}
    for n in merged_names:
        t = tau[n]
        if method == "soup":
            delta = t.mean(0)
        elif method == "task_arithmetic":
            delta = hp["lambda"] * t.sum(0)
        elif method == "dare":
            keep = 1 - hp["p"]
            delta = torch.zeros_like(base[n])
            for i, label in enumerate(hp["labels"]):
                delta += t[i] * keep_mask(t[i].shape, keep, mask_seed(hp["seed"], n, label)) / keep
            delta = hp["lambda"] * delta
        elif method == "consensus":
            total = t.sum(0)
            masks = torch.stack([t[i].abs() > hp["lambda_t"] * (total - t[i]).abs() for i in range(len(t))])
            delta = hp["lambda"] * total * (masks.sum(0) >= hp["k"])
        elif method == "varm":
            energy = torch.stack([(t[i] ** 2).mean() for i in range(len(t))])
            w = energy / energy.sum()
            delta = sum(w[i] * t[i] for i in range(len(t)))
        else:
            raise ValueError(method)
        out[n] = base[n] + delta
    return out


def reference_code_localize_stitch(base_dir: Path, expert_dirs: list[Path], sparsity: float) -> dict[str, torch.Tensor]:
    """Localize-and-Stitch as the reference code computes it (dataless), the plain way: one flat vector of
    every tensor whose name lacks "embed"; each task localized by torch.topk against the base as modified
    in place by the tasks before it (lm_head and embeddings never written back); each mask's overlap
    counted against the last other mask only; the result the modified base plus the weighted task
    vectors taken against it. Merged tensors only."""
    base = load_all(base_dir)
    experts = [load_all(e) for e in expert_dirs]
    ranked = sorted(n for n in base if "embed" not in n)
    written = {n for n in ranked if is_merged(n)}
    shared = {n: base[n].clone() for n in ranked}  # the base the reference modifies in place

    def task_vector(model):
        return torch.cat([(model[n] - shared[n]).flatten() for n in ranked])

    def add_into_shared(vec):
        pos = 0
        for n in ranked:
            k = shared[n].numel()
            if n in written:
                shared[n] += vec[pos:pos + k].reshape(shared[n].shape)
            pos += k

    masks = []
    for model in experts:
        tv = task_vector(model)
        threshold = torch.topk(tv.abs(), int(sparsity * tv.numel())).values.min()
        mask = (tv.abs() >= threshold).float()
        masks.append(mask)
        add_into_shared(tv * mask)
    if len(masks) > 1:
        weights = []
        for i in range(len(masks)):
            count = masks[i].clone()
            for j in range(len(masks)):
                if i != j:
                    last = torch.logical_and(masks[i].bool(), masks[j].bool())
            count = count + last
            weights.append(torch.where(count == 0, torch.zeros_like(count), 1.0 / count))
        masks = weights
    total = torch.zeros_like(masks[0])
    for model, weight in zip(experts, masks, strict=True):
        total += weight * task_vector(model)
    add_into_shared(total)
    return {n: shared[n] for n in written}
