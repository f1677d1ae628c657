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
