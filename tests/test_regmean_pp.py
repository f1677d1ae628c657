"""RegMean++: equal to RegMean on one decoder layer, and layer l fitted on inputs from the merged layers
below it (checked by rebuilding those inputs with plain Hugging Face models)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from reference_merge import load_all
from tinydata import build_data_family, write_domain_data

from mergebench.cli.main import main
from mergebench.errors import MergeBenchError
from mergebench.merging.data import load_samples
from mergebench.merging.engine import MergeJob, merge
from mergebench.merging.stats import StatsJob, compute_stats, encode, load_tokenizer

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


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
def test_upper_layer_is_fitted_on_inputs_from_the_merged_layers_below(tmp_path, data, kind):
    """Layer 1 of the result = RegMean of the specialists' layer 1, with Grams taken on a model whose
    embeddings and layer 0 are the merged ones (for Gemma-2, layer 1 is a sliding-window layer)."""
    from transformers import AutoModelForCausalLM

    base, experts = _family(tmp_path, kind, layers=2)
    alpha = 0.5
    out = merge(MergeJob("regmean_pp", str(base), [str(e) for e in experts], str(tmp_path / "pp"),
                         data=[str(data)], settings={"alpha": alpha, "samples": N, "max_length": MAX_LEN})).out
    merged = load_all(out)
    tok = load_tokenizer(base)
    grams = []
    for expert, domain in zip(experts, DOMAINS3, strict=True):
        hybrid = AutoModelForCausalLM.from_pretrained(expert, dtype=torch.float32).eval()
        with torch.no_grad():  # merged embeddings and layer 0, the specialist's own layer 1
            for name, p in hybrid.named_parameters():
                if "layers.1." not in name and name in merged:
                    p.copy_(merged[name])
        g: dict[str, torch.Tensor] = {}

        def grab(mod, args, key, g=g):
            x = args[0][0].double()
            g[key] = g.get(key, 0) + x.T @ x

        hooks = [m.register_forward_pre_hook(lambda mod, args, key=f"{n}.weight": grab(mod, args, key))
                 for n, m in hybrid.named_modules() if isinstance(m, torch.nn.Linear) and ".layers.1." in n]
        with torch.no_grad():
            for s in load_samples(str(data), N, 0, domain):
                hybrid(input_ids=torch.tensor([encode(tok, s, MAX_LEN)[0]]))
        for h in hooks:
            h.remove()
        grams.append(g)
    base_t, models = load_all(base), [load_all(e) for e in experts]
    for name in grams[0]:
        gt = [alpha * g[name] + (1 - alpha) * torch.diag(torch.diagonal(g[name])) for g in grams]
        rhs = sum(gi @ m[name].double().T for gi, m in zip(gt, models, strict=True))
        want = torch.linalg.solve(sum(gt), rhs).T
        torch.testing.assert_close(merged[name].double(), want, rtol=1e-3, atol=1e-4, msg=name)
    for name in ("model.layers.1.input_layernorm.weight", "model.norm.weight"):  # averaged
        torch.testing.assert_close(merged[name], torch.stack([m[name] for m in models]).mean(0))
    assert torch.equal(merged["model.embed_tokens.weight"], base_t["model.embed_tokens.weight"])


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
