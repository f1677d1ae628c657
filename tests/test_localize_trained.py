"""Localize-and-Stitch with trained masks: the `mask` statistics pass and `localize_stitch masks=trained`.

The specialists are the base briefly finetuned on their own domain's rows, so their task vectors carry
what the validation data asks for. Every check is against a computation written here, sharing no code
with the kit: masks from a flattened `kthvalue`, the mask gradient from autograd through σ(S) with HF's
own loss, the stitch from whole models in memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from reference_merge import load_all
from safetensors.torch import load_file, save_file
from tinydata import save_char_tokenizer, write_domain_data
from tinymodels import build_base

import mergebench.merging.io.source as source_module
from mergebench.cli.main import main
from mergebench.errors import MergeBenchError
from mergebench.merging.datapass.model import load_tokenizer, sample_ids
from mergebench.merging.datapass.samples import load_samples
from mergebench.merging.datapass.stats import StatsJob, compute_stats
from mergebench.merging.run import MergeJob, merge

DOMAINS = ("instruction", "math")
SAMPLES = 6
MAX_LEN = 320


def finetune(base: Path, data: Path, domain: str, out: Path, steps: int = 12) -> Path:
    """The base after a few Adam steps on one domain's rows (embeddings and lm_head frozen)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    trained = [p for n, p in model.named_parameters() if "embed" not in n and not n.startswith("lm_head")]
    opt = torch.optim.Adam(trained, lr=3e-3)
    tok = load_tokenizer(base)
    rows = [sample_ids(tok, s, MAX_LEN) for s in load_samples(str(data), 12, 1, domain)]
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([seq + [0] * (width - len(seq)) for seq, _ in rows])
    labels = torch.tensor([[-100] * start + seq[start:] + [-100] * (width - len(seq)) for seq, start in rows])
    attention = (torch.arange(width)[None] < torch.tensor([len(s) for s, _ in rows])[:, None]).long()
    for _ in range(steps):
        model(input_ids=ids, attention_mask=attention, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    save_char_tokenizer(out)
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one intra-op thread is as fast, and far faster on a shared, loaded host."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("localize-trained")
    data = write_domain_data(root / "data")
    base = build_base("llama", root / "base")  # untied lm_head: ranked for the threshold, never merged
    save_char_tokenizer(base)
    experts = [finetune(base, data, d, root / d) for d in DOMAINS]
    masks = [mask_stats(e, data, d, root / f"masks-{d}", base) for e, d in zip(experts, DOMAINS, strict=True)]
    return {"root": root, "data": data, "base": base, "experts": experts, "masks": masks}


def mask_stats(expert: Path, data: Path, domain: str, out: Path, base: Path, **settings) -> Path:
    return compute_stats(StatsJob("mask", str(expert), str(data), SAMPLES, str(out), domain=domain,
                                  max_length=MAX_LEN, batch_size=4, base=str(base), settings=settings)).out


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def merged_names(base: dict) -> list[str]:
    return sorted(n for n in base if "embed" not in n and not n.startswith("lm_head"))


def dataless_masks(base: dict, expert: dict, sparsity: float = 0.1) -> dict[str, torch.Tensor]:
    """Top int(sparsity·d) |τ| over every tensor lacking 'embed' (lm_head included), by kthvalue."""
    ranked = sorted(n for n in base if "embed" not in n)
    flat = torch.cat([(expert[n] - base[n]).abs().flatten() for n in ranked])
    k = int(sparsity * flat.numel())
    kth = flat.kthvalue(flat.numel() - k + 1).values
    return {n: (expert[n] - base[n]).abs() >= kth for n in merged_names(base)}


def masked_loss(base: dict, expert: dict, masks: dict[str, torch.Tensor], base_dir: Path, data: Path,
                domain: str) -> float:
    """Mean over samples of HF's own response-token loss of θ0 + mask ⊙ τ."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in masks:
                p.copy_(base[n] + masks[n].float() * (expert[n] - base[n]))
    tok = load_tokenizer(base_dir)
    losses = []
    with torch.no_grad():
        for s in load_samples(str(data), SAMPLES, 0, domain):
            ids, start = sample_ids(tok, s, MAX_LEN)
            labels = torch.tensor([[-100] * start + ids[start:]])
            losses.append(float(model(input_ids=torch.tensor([ids]), labels=labels).loss))
    return sum(losses) / len(losses)


# --- the mask statistics ------------------------------------------------------------------------------


def test_lr_zero_gives_the_dataless_masks_and_the_dataless_merge_bit_for_bit(world, tmp_path):
    base_t = load_all(world["base"])
    zero = [mask_stats(e, world["data"], d, tmp_path / f"zero-{d}", world["base"], lr=0)
            for e, d in zip(world["experts"], DOMAINS, strict=True)]
    for store, expert in zip(zero, world["experts"], strict=True):
        got = load_file(store / "masks.safetensors")
        want = dataless_masks(base_t, load_all(expert))
        assert set(got) == set(want)
        for n in want:
            assert got[n].dtype == torch.bool and torch.equal(got[n], want[n]), n
    ex = [str(e) for e in world["experts"]]
    trained = merge(MergeJob("localize_stitch", str(world["base"]), ex, str(tmp_path / "trained"),
                             settings={"masks": "trained"}, stats=[str(s) for s in zero])).out
    dataless = merge(MergeJob("localize_stitch", str(world["base"]), ex, str(tmp_path / "dataless"))).out
    a, b = load_all(trained), load_all(dataless)
    assert set(a) == set(b) and all(torch.equal(a[n], b[n]) for n in a)
    assert (trained / "model.safetensors").read_bytes() == (dataless / "model.safetensors").read_bytes()
    manifest = json.loads((trained / "merge_manifest.json").read_text())
    assert manifest["global_thresholds"] is None  # trained masks need no threshold pass
    assert manifest["stats"][0]["kind"] == "mask" and manifest["stats"][0]["settings"]["lr"] == 0


def test_training_lowers_the_masked_models_loss(world):
    base_t = load_all(world["base"])
    for expert, store, domain in zip(world["experts"], world["masks"], DOMAINS, strict=True):
        expert_t = load_all(expert)
        manifest = json.loads((store / "stats_manifest.json").read_text())
        assert manifest["settings"] == {"sparsity": 0.1, "sigmoid_bias": 3.0, "lr": 1e8, "epochs": 1, "l1": 0.0,
                                        "threshold_set": "reference"}
        initial = dataless_masks(base_t, expert_t)
        trained = load_file(store / "masks.safetensors")
        assert manifest["kept_initial"] == sum(int(m.sum()) for m in initial.values())
        assert manifest["kept"] == sum(int(m.sum()) for m in trained.values())
        assert manifest["switched_on"] + manifest["switched_off"] > 0
        before = masked_loss(base_t, expert_t, initial, world["base"], world["data"], domain)
        after = masked_loss(base_t, expert_t, trained, world["base"], world["data"], domain)
        assert after < before - 0.01, (domain, before, after)


def test_mask_step_equals_autograd_through_the_sigmoid(world, tmp_path):
    """Two epochs with an L1 weight, against S ← S − lr·∇(mean loss + l1·Σσ(S)) by autograd."""
    from torch.func import functional_call
    from transformers import AutoModelForCausalLM

    lr, l1, bias = 1e8, 2e-7, 3.0
    expert, domain = world["experts"][1], DOMAINS[1]
    store = mask_stats(expert, world["data"], domain, tmp_path / "m", world["base"], lr=lr, l1=l1, epochs=2)
    base_t, expert_t = load_all(world["base"]), load_all(expert)
    names = merged_names(base_t)
    model = AutoModelForCausalLM.from_pretrained(world["base"], dtype=torch.float32)
    tok = load_tokenizer(world["base"])
    rows = [sample_ids(tok, s, MAX_LEN) for s in load_samples(str(world["data"]), SAMPLES, 0, domain)]
    logits = {n: torch.where(m, bias, -bias) for n, m in dataless_masks(base_t, expert_t).items()}
    for _ in range(2):
        s = {n: v.clone().requires_grad_() for n, v in logits.items()}
        params = {n: base_t[n] + torch.sigmoid(s[n]) * (expert_t[n] - base_t[n]) for n in names}
        loss = sum(functional_call(model, params, args=(), kwargs={
            "input_ids": torch.tensor([ids]), "labels": torch.tensor([[-100] * start + ids[start:]])}).loss
            for ids, start in rows) / len(rows)
        loss = loss + l1 * sum(torch.sigmoid(v).sum() for v in s.values())
        loss.backward()
        logits = {n: (s[n] - lr * s[n].grad).detach() for n in names}
    got = load_file(store / "masks.safetensors")
    decided = 0
    for n in names:
        clear = logits[n].abs() > 1e-2  # entries float rounding cannot flip
        assert torch.equal(got[n][clear], (logits[n] > 0)[clear]), n
        decided += int(clear.sum())
    assert decided > 0.99 * sum(v.numel() for v in logits.values())
    manifest = json.loads((store / "stats_manifest.json").read_text())
    assert len(manifest["relaxed_loss_per_epoch"]) == 2
    assert manifest["relaxed_loss_per_epoch"][1] < manifest["relaxed_loss_per_epoch"][0]


def test_mask_training_is_deterministic(world, tmp_path):
    expert, domain = world["experts"][0], DOMAINS[0]
    a = mask_stats(expert, world["data"], domain, tmp_path / "a", world["base"])
    b = mask_stats(expert, world["data"], domain, tmp_path / "b", world["base"])
    assert (a / "masks.safetensors").read_bytes() == (b / "masks.safetensors").read_bytes()
    assert (a / "masks.safetensors").read_bytes() == (world["masks"][0] / "masks.safetensors").read_bytes()
    other = mask_stats(expert, world["data"], domain, tmp_path / "c", world["base"], sparsity=0.05)
    assert (other / "masks.safetensors").read_bytes() != (a / "masks.safetensors").read_bytes()


# --- the stitch ---------------------------------------------------------------------------------------


def test_stitch_of_stored_masks_matches_the_slow_reference(world, tmp_path, monkeypatch):
    base_t = load_all(world["base"])
    experts = [load_all(e) for e in world["experts"]]
    masks = [load_file(s / "masks.safetensors") for s in world["masks"]]
    job = dict(settings={"masks": "trained"}, stats=[str(s) for s in world["masks"]])
    ex = [str(e) for e in world["experts"]]
    out = merge(MergeJob("localize_stitch", str(world["base"]), ex, str(tmp_path / "m"), **job)).out
    got = load_all(out)
    overlaps = 0
    for n in base_t:
        if n not in masks[0]:  # embeddings and lm_head stay the base's
            assert torch.equal(got[n], base_t[n]), n
            continue
        m = torch.stack([mk[n].float() for mk in masks])
        tau = torch.stack([e[n] - base_t[n] for e in experts])
        want = base_t[n] + (m * tau).sum(0) / m.sum(0).clamp(min=1)
        torch.testing.assert_close(got[n], want, rtol=0, atol=1e-7, msg=n)
        overlaps += int((m.sum(0) == 2).sum())
    assert overlaps > 0  # the averaging of overlapping masks was exercised
    # the same, merged a block of rows at a time: the masks are read for the same rows as τ
    monkeypatch.setattr(source_module, "BLOCK_ELEMENTS", 200)
    blocked = merge(MergeJob("localize_stitch", str(world["base"]), ex, str(tmp_path / "b"), **job)).out
    assert (blocked / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def test_cli_stats_and_merge_with_trained_masks(world, tmp_path):
    base, ex, data = world["base"], world["experts"], world["data"]
    stores = []
    for expert, domain in zip(ex, DOMAINS, strict=True):
        out = tmp_path / f"s-{domain}"
        r = CliRunner().invoke(main, ["stats", "--kind", "mask", "--model", str(expert), "--base", str(base),
                                      "--data", str(data), "--domain", domain, "--compat", "reference",
                                      "--samples", str(SAMPLES), "--max-length", str(MAX_LEN), "--batch-size", "4",
                                      "--set", "lr=1e8", "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert "kept (initial → trained)" in r.output
        manifest = json.loads((out / "stats_manifest.json").read_text())
        # the reference trains every mask on its specialist's own domain, even under --compat reference
        assert (Path(manifest["data"]).name, manifest["domain"]) == (f"{domain}.jsonl", domain)
        assert manifest["base"] == str(base) and manifest["base_files"]
        stores.append(out)
    assert all((s / "masks.safetensors").read_bytes() == (w / "masks.safetensors").read_bytes()
               for s, w in zip(stores, world["masks"], strict=True))
    r = CliRunner().invoke(main, ["merge", "-m", "localize_stitch", "-b", str(base), "-e", str(ex[0]), "-e", str(ex[1]),
                                  "--stats", str(stores[0]), "--stats", str(stores[1]), "--set", "masks=trained",
                                  "-o", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    ref = merge(MergeJob("localize_stitch", str(base), [str(e) for e in ex], str(tmp_path / "ref"),
                         settings={"masks": "trained"}, stats=[str(s) for s in world["masks"]])).out
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()


# --- bad input ----------------------------------------------------------------------------------------


def test_bad_mask_stores_are_one_line_errors_and_write_nothing(world, tmp_path):
    base, ex, stores = world["base"], [str(e) for e in world["experts"]], world["masks"]
    out = tmp_path / "m"

    def fails(match, st=None, settings=None, b=base):
        with pytest.raises(MergeBenchError) as e:
            merge(MergeJob("localize_stitch", str(b), ex, str(out), settings=settings or {"masks": "trained"},
                           stats=[str(s) for s in (st if st is not None else stores)]))
        assert match in one_line(e), str(e.value)
        assert not out.exists() and not list(tmp_path.glob(".m.partial-*"))
        return str(e.value)

    fails("needs mask statistics for each specialist", st=[])
    fails("uses no statistics", settings={"sparsity": 0.1})  # dataless masks take no --stats
    fails("setting sparsity does not apply to masks=trained", settings={"masks": "trained", "sparsity": 0.2})
    assert str(stores[1]) in fails("weights differ from the specialist", st=stores[::-1])
    # masks trained against another base: τ, hence the masks, belong to that base
    other_base = build_base("llama", tmp_path / "other-base", seed=1)
    save_char_tokenizer(other_base)
    foreign = mask_stats(world["experts"][1], world["data"], DOMAINS[1], tmp_path / "foreign", other_base)
    fails("masks were trained against the base", st=[stores[0], foreign])
    gram = compute_stats(StatsJob("gram", ex[1], str(world["data"]), 2, str(tmp_path / "gram"), domain="math")).out
    fails("holds gram statistics; method localize_stitch needs mask", st=[stores[0], gram])

    def broken(name: str, edit) -> Path:
        d = tmp_path / name
        d.mkdir()
        tensors = load_file(stores[1] / "masks.safetensors")
        edit(tensors)
        save_file(tensors, d / "masks.safetensors")
        (d / "stats_manifest.json").write_text((stores[1] / "stats_manifest.json").read_text())
        return d

    target = "model.layers.1.mlp.down_proj.weight"
    missing = broken("missing", lambda t: t.pop(target))
    msg = fails(f"no mask statistics for tensor {target}", st=[stores[0], missing])
    assert str(missing / "masks.safetensors") in msg
    shape = broken("shape", lambda t: t.update({target: t[target].T.contiguous()}))
    msg = fails(f"mask statistics of {target} have shape [48, 32], expected [32, 48]", st=[stores[0], shape])
    assert str(shape / "masks.safetensors") in msg
    floats = broken("floats", lambda t: t.update({target: t[target].float()}))
    fails(f"the mask of {target} is float32, expected bool or uint8", st=[stores[0], floats])
    # uint8 masks (as other tools write them) are accepted
    as_bytes = broken("bytes", lambda t: t.update({n: v.to(torch.uint8) for n, v in t.items()}))
    a = merge(MergeJob("localize_stitch", str(base), ex, str(tmp_path / "u8"), settings={"masks": "trained"},
                       stats=[str(stores[0]), str(as_bytes)])).out
    b = merge(MergeJob("localize_stitch", str(base), ex, str(tmp_path / "bool"), settings={"masks": "trained"},
                       stats=[str(s) for s in stores])).out
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def test_bad_mask_statistics_jobs_are_one_line_errors(world, tmp_path):
    expert, data, base = str(world["experts"][0]), str(world["data"]), str(world["base"])

    def fails(match, **kw):
        job = dict(kind="mask", model=expert, data=data, samples=2, out=str(tmp_path / "s"), domain="instruction",
                   base=base)
        job.update(kw)
        with pytest.raises(MergeBenchError) as e:
            compute_stats(StatsJob(**job))
        assert match in one_line(e), str(e.value)

    fails("needs the base model (--base)", base=None)
    fails("takes no --set", kind="gram", base=None, settings={"lr": 1.0})
    fails("takes no --base", kind="fisher")
    fails("mask statistics: unknown setting 'learning_rate'", settings={"learning_rate": 1.0})
    fails("mask statistics: setting lr=-1.0 is outside", settings={"lr": -1})
    fails("sigmoid_bias=0.0 must be positive", settings={"sigmoid_bias": 0})
    gemma = build_base("gemma2", tmp_path / "gemma-base")
    save_char_tokenizer(gemma)
    fails("architecture differs from the base", base=str(gemma))
    fails("already exists", out=str(world["masks"][0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemma-base"]
    r = CliRunner().invoke(main, ["stats", "--kind", "mask", "--model", expert, "--data", data, "--domain", "math",
                                  "--out", str(tmp_path / "cli")])
    assert r.exit_code == 1 and "needs the base model (--base)" in r.output and not (tmp_path / "cli").exists()


# --- the pipeline ---------------------------------------------------------------------------------------


def test_plan_trains_one_mask_store_per_specialist_before_the_trained_merge():
    from mergebench.catalog import DOMAIN_NAMES
    from mergebench.pipeline.plan import build_plan

    for model in ("tiny", "llama-3.2-3b"):
        plan = build_plan(model, ["localize_stitch", "localize_stitch_trained"]).by_name
        merged = plan["merge/localize_stitch_trained"]
        assert merged.params["method"] == "localize_stitch" and merged.params["settings"] == {"masks": "trained"}
        assert merged.inputs == {"family": merged.inputs["family"],
                                 **{f"stats_{d}": f"stats/mask/{d}" for d in DOMAIN_NAMES}}
        assert all(plan[f"stats/mask/{d}"].params["kind"] == "mask" for d in DOMAIN_NAMES)
        assert not any(n.startswith("stats/") for n in plan["merge/localize_stitch"].inputs)
