"""RegMean++: equal to RegMean on one decoder layer; every layer l fitted on inputs from the merged layers
below it (checked against a plain layer-by-layer reference on whole Hugging Face models); and only one
layer (plus one specialist's) materialized at a time."""

from __future__ import annotations

import json
import weakref

import pytest
import torch
from click.testing import CliRunner
from reference_merge import load_all
from tinydata import (
    build_data_family,
    build_specialist_same_embeddings,
    save_char_tokenizer,
    write_domain_data,
)
from tinymodels import config

from mergebench.cli.main import main
from mergebench.errors import MergeBenchError
from mergebench.merging.datapass.model import load_tokenizer, sample_ids
from mergebench.merging.datapass.samples import load_samples
from mergebench.merging.datapass.stats import StatsJob, compute_stats
from mergebench.merging.io.checkpoint import Checkpoint
from mergebench.merging.regmean_pp import RegMeanPlusPlus
from mergebench.merging.run import MergeJob, merge

N, MAX_LEN = 5, 200
DOMAINS3 = ("instruction", "math", "coding")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_domain_data(tmp_path_factory.mktemp("pp-data"))


def _family(tmp_path, kind, layers):
    return build_data_family(tmp_path / kind, kind, n=3, layers=layers)


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
def test_single_layer_regmean_pp_equals_regmean(tmp_path, data, kind):
    base, experts = _family(tmp_path, kind, layers=1)
    stats = [compute_stats(StatsJob("gram", str(e), str(data), N, str(tmp_path / f"g{i}"), domain=d,
                                    max_length=MAX_LEN, batch_size=2)).out
             for i, (e, d) in enumerate(zip(experts, DOMAINS3, strict=True))]
    hp = {"alpha": 0.3}
    a = merge(MergeJob("regmean", str(base), [str(e) for e in experts], str(tmp_path / "rm"),
                       stats=[str(s) for s in stats], settings=hp)).out
    b = merge(MergeJob("regmean_pp", str(base), [str(e) for e in experts], str(tmp_path / "pp"), data=[str(data)],
                       settings={**hp, "samples": N, "max_length": MAX_LEN})).out
    got, want, base_t = load_all(b), load_all(a), load_all(base)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)
        if "proj" in name:
            assert not torch.equal(got[name], base_t[name])
    manifest = json.loads((b / "merge_manifest.json").read_text())
    assert [d["domain"] for d in manifest["data"]] == list(DOMAINS3)
    assert manifest["method"] == "regmean_pp" and manifest["settings"]["alpha"] == 0.3


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """Four-layer families (base + three specialists that share its embeddings), built once per kind."""
    built = {}

    def family(kind):
        if kind not in built:
            from transformers import AutoModelForCausalLM

            root = tmp_path_factory.mktemp(f"pp-deep-{kind}")
            cfg = {**config(kind).to_dict(), "num_hidden_layers": 4}
            cfg.pop("layer_types", None)  # re-derived for four layers: Gemma-2 alternates sliding and global
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(type(config(kind))(**cfg)).save_pretrained(root / "base")
            save_char_tokenizer(root / "base")
            built[kind] = root / "base", [build_specialist_same_embeddings(root / "base", root / f"{kind}-{d}", 300 + i)
                                          for i, d in enumerate(DOMAINS3)]
        return built[kind]

    return family


def _reference(base, experts, data, alpha):
    """RegMean++ done plainly on whole in-memory models: for layer l, each specialist's model with the base's
    embeddings and the reference's own merged layers 0..l−1 runs its samples; float64 Grams of its layer l's
    linear inputs give layer l by RegMean; other tensors of the layer and the final norm are averaged."""
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(base)
    models = [AutoModelForCausalLM.from_pretrained(e, dtype=torch.float32).eval() for e in experts]
    own = [load_all(e) for e in experts]
    merged = {n: t for n, t in load_all(base).items() if "embed" in n or n.startswith("lm_head")}
    for l_idx in range(models[0].config.num_hidden_layers):
        grams = []
        for model, domain in zip(models, DOMAINS3, strict=True):
            with torch.no_grad():  # layers below l (and the embeddings) are the merged ones by now
                for name, p in model.named_parameters():
                    if name in merged:
                        p.copy_(merged[name])
            g: dict[str, torch.Tensor] = {}

            def grab(mod, args, key, g=g):
                x = args[0][0].double()
                g[key] = g.get(key, 0) + x.T @ x

            hooks = [m.register_forward_pre_hook(lambda mod, args, key=f"{n}.weight": grab(mod, args, key))
                     for n, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear) and f".layers.{l_idx}." in n]
            with torch.no_grad():
                for s in load_samples(str(data), N, 0, domain):
                    model(input_ids=torch.tensor([sample_ids(tok, s, MAX_LEN)[0]]))
            for h in hooks:
                h.remove()
            grams.append(g)
        for name in [n for n in own[0] if f".layers.{l_idx}." in n]:
            if name in grams[0]:
                gt = [alpha * g[name] + (1 - alpha) * torch.diag(torch.diagonal(g[name])) for g in grams]
                rhs = sum(gi @ m[name].double().T for gi, m in zip(gt, own, strict=True))
                merged[name] = torch.linalg.solve(sum(gt), rhs).T.float()
            else:
                merged[name] = torch.stack([m[name] for m in own]).mean(0)
    merged["model.norm.weight"] = torch.stack([m["model.norm.weight"] for m in own]).mean(0)
    return merged


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
def test_regmean_pp_equals_a_plain_layer_by_layer_reference(tmp_path, data, deep, kind):
    """Every layer of a four-layer model is RegMean fitted on inputs from the merged layers below it (for
    Gemma-2 both sliding-window and global layers), whatever order the merge materializes and writes them."""
    base, experts = deep(kind)
    alpha = 0.5
    out = merge(MergeJob("regmean_pp", str(base), [str(e) for e in experts], str(tmp_path / "pp"),
                         data=[str(data)], settings={"alpha": alpha, "samples": N, "max_length": MAX_LEN})).out
    got, want = load_all(out), _reference(base, experts, data, alpha)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-3, atol=1e-4, msg=name)


def test_regmean_pp_holds_one_layer_at_a_time(tmp_path, data, deep, monkeypatch):
    """Parameters materialized at once never exceed the decoder's own modules (embeddings, final norm) plus
    two layers (the one being merged and one specialist's), never the four layers or the lm_head."""
    base, experts = deep("llama")
    live, peak = [0], [0]
    materialize = RegMeanPlusPlus._materialize

    def counted(self, skeleton, ckpt, prefix):
        module = materialize(self, skeleton, ckpt, prefix)
        for p in module.parameters():
            live[0] += p.numel()
            weakref.finalize(p, lambda n=p.numel(): live.__setitem__(0, live[0] - n))
        peak[0] = max(peak[0], live[0])
        return module

    monkeypatch.setattr(RegMeanPlusPlus, "_materialize", counted)
    merge(MergeJob("regmean_pp", str(base), [str(e) for e in experts], str(tmp_path / "pp"), data=[str(data)],
                   settings={"samples": 2, "max_length": 64}))
    sizes = {n: info.numel for n, info in Checkpoint(base).tensors.items()}
    layer = sum(v for n, v in sizes.items() if n.startswith("model.layers.0."))
    assert peak[0] == sizes["model.embed_tokens.weight"] + sizes["model.norm.weight"] + 2 * layer
    assert peak[0] < sum(sizes.values()) - 2 * layer  # the whole model is four layers and an lm_head more


def test_regmean_pp_data_pairing_and_bad_inputs(tmp_path, data):
    base, experts = _family(tmp_path, "llama", layers=1)
    ex = [str(e) for e in experts]
    r = CliRunner().invoke(main, ["merge", "-m", "regmean++", "-b", str(base), *sum((["-e", e] for e in ex), []),
                                  "--data", str(data), "--compat", "reference", "--set", "samples=2",
                                  "--set", "max_length=64", "-o", str(tmp_path / "ref")])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "ref" / "merge_manifest.json").read_text())
    assert [d["domain"] for d in manifest["data"]] == ["math", "safety", "coding"]  # the reference's zip

    def fails(match, method="regmean_pp", **kw):
        with pytest.raises(MergeBenchError) as e:
            merge(MergeJob(method, str(base), ex, str(tmp_path / "m"), settings=kw.pop("settings", {}), **kw))
        assert "\n" not in str(e.value) and match in str(e.value), str(e.value)
        assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.partial-*"))

    fails("needs validation data")
    fails("2 --data given for 3 --expert", data=["math", "coding"])
    fails("unknown domain 'chemistry'", data=["chemistry"])
    fails("reads no validation data", method="soup", data=[str(data)])
    fails("setting samples=0 is outside", data=[str(data)], settings={"samples": 0})
    fails("compatibility mode 'paper'", data=["math.jsonl"], compat="paper")
