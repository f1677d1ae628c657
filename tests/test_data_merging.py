"""Data-dependent merging: validation data, pairing, the statistics pass, RegMean and Fisher.

Every identity is checked against a direct computation that shares no code with the kit: least squares
on the stacked layer inputs, per-sample autograd gradients, Grams from per-sample hooks in float64.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from reference_merge import load_all
from safetensors.torch import load_file, save_file
from tinydata import build_data_family, write_domain_data

from mergebench.cli.main import main
from mergebench.errors import MergeBenchError
from mergebench.merging.datapass.model import load_tokenizer, sample_ids
from mergebench.merging.datapass.samples import DOMAINS, format_prompt, load_samples
from mergebench.merging.datapass.stats import StatsJob, compute_stats
from mergebench.merging.methods import TensorContext
from mergebench.merging.methods.fisher import fisher
from mergebench.merging.methods.regmean import regmean
from mergebench.merging.pairing import REFERENCE_PAIRING, data_domain, pair_data
from mergebench.merging.run import MergeJob, merge

MAX_LEN = 320
SAMPLES = 6


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Llama and Gemma-2 families (base + instruction and math specialists), domain data, and stats."""
    root = tmp_path_factory.mktemp("data-merging")
    data = write_domain_data(root / "data")
    out = {"data": data, "root": root}
    for kind in ("llama", "gemma2"):
        base, experts = build_data_family(root, kind)
        stats = {}
        for k in ("gram", "fisher"):
            stats[k] = [compute_stats(StatsJob(k, str(e), str(data), SAMPLES, str(root / f"{kind}-{k}-{i}"),
                                               domain=DOMAINS[i], max_length=MAX_LEN, batch_size=4)).out
                        for i, e in enumerate(experts)]
        out[kind] = (base, experts, stats)
    return out


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# --- data --------------------------------------------------------------------------------------------


def test_samples_are_deterministic_and_formatted(world):
    data = world["data"]
    a = load_samples(str(data), 5, seed=1, domain="math")
    assert a == load_samples(str(data), 5, seed=1, domain="math")
    assert a[:3] == load_samples(str(data), 3, seed=1, domain="math")  # a smaller count is a prefix
    assert a != load_samples(str(data), 5, seed=2, domain="math")
    assert len(load_samples(str(data), 500, seed=0, domain="math")) == 12  # all rows when fewer
    s = a[0]
    assert s.prompt.startswith("Below is an instruction that describes a task.")
    assert "### Instruction:\nmath question" in s.prompt and s.prompt.endswith("### Response:\n")
    assert s.response.startswith("math answer") and s.text == s.prompt + s.response
    with_input = format_prompt("do it", context="the context")
    assert "paired with an input" in with_input and "### Input:\nthe context\n\n### Response:\n" in with_input


def test_every_mergebench_column_set_and_prompt_response_rows(tmp_path):
    rows = [{"instruction": "i", "input": "x", "output": "o"}, {"query": "q", "response": "r"},
            {"instruction": "c", "response": "code"}, {"inputs": "bonjour", "targets": "salut"},
            {"prompt": "p", "response": "no"}]
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    got = {(s.prompt.split("### Instruction:\n")[1].split("\n")[0], s.response) for s in load_samples(str(f), 10)}
    assert got == {("i", "o"), ("q", "r"), ("c", "code"), ("bonjour", "salut"), ("p", "no")}


def test_bad_data_sources_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(MergeBenchError) as e:
        load_samples("chemistry", 3)
    assert all(d in one_line(e) for d in DOMAINS)
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if `datasets` were not installed
    with pytest.raises(MergeBenchError) as e:
        load_samples("math", 3)
    assert "MergeBench/math_val" in one_line(e) and "datasets" in str(e.value)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(MergeBenchError, match="expected prompt/response"):
        load_samples(str(bad), 1)
    bad.write_text("{not json\n")
    with pytest.raises(MergeBenchError, match="bad.jsonl:1: invalid JSON"):
        load_samples(str(bad), 1)
    with pytest.raises(MergeBenchError, match="no chemistry.jsonl|unknown domain"):
        load_samples(str(tmp_path), 1, domain="chemistry")


# --- pairing -----------------------------------------------------------------------------------------


def test_pairing_default_and_reference():
    order = ["instruction", "math", "coding", "safety", "multilingual"]
    assert pair_data(order) == order
    assert pair_data(order, "reference") == ["math", "safety", "coding", "multilingual", "instruction"]
    assert REFERENCE_PAIRING == {"instruction": "math", "math": "safety", "coding": "coding",
                                 "safety": "multilingual", "multilingual": "instruction"}
    # a fixed permutation: the same whatever the order or subset of specialists
    assert pair_data(["safety", "coding"], "reference") == ["multilingual", "coding"]
    with pytest.raises(MergeBenchError, match="known domains"):
        data_domain("chemistry")
    with pytest.raises(MergeBenchError, match="compatibility mode"):
        data_domain("math", "paper")


def test_stats_cli_pairs_each_specialist_with_its_data(world, tmp_path):
    """With a directory of per-domain data, --compat decides which file each specialist's stats read."""
    base, experts, _ = world["llama"]
    seen = {}
    for compat in ("default", "reference"):
        for expert, domain in zip(experts, ("instruction", "math"), strict=True):
            out = tmp_path / f"{compat}-{domain}"
            r = CliRunner().invoke(main, ["stats", "--kind", "gram", "--model", str(expert), "--data",
                                          str(world["data"]), "--domain", domain, "--compat", compat,
                                          "--samples", "2", "--max-length", "64", "--out", str(out)])
            assert r.exit_code == 0, r.output
            manifest = json.loads((out / "stats_manifest.json").read_text())
            seen[compat, domain] = (Path(manifest["data"]).name, manifest["domain"])
    assert seen == {("default", "instruction"): ("instruction.jsonl", "instruction"),
                    ("default", "math"): ("math.jsonl", "math"),
                    ("reference", "instruction"): ("math.jsonl", "math"),
                    ("reference", "math"): ("safety.jsonl", "safety")}


# --- the statistics pass -----------------------------------------------------------------------------


def _layer_inputs(model_dir: Path, data: Path, domain: str, n: int, max_length: int = MAX_LEN):
    """Per linear of the decoder: its inputs over all tokens, one sample at a time, in float64."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = load_tokenizer(model_dir)
    inputs: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and ".layers." in name:
            def grab(mod, args, key=f"{name}.weight"):
                inputs.setdefault(key, []).append(args[0][0].detach().double())
            hooks.append(m.register_forward_pre_hook(grab))
    samples = load_samples(str(data), n, 0, domain)
    with torch.no_grad():
        for s in samples:
            ids, _ = sample_ids(tok, s, max_length)
            model(input_ids=torch.tensor([ids]))
    for h in hooks:
        h.remove()
    return model, {k: torch.cat(v) for k, v in inputs.items()}, samples


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
def test_gram_pass_equals_brute_force(world, kind):
    base, experts, stats = world[kind]
    model, inputs, _ = _layer_inputs(experts[1], world["data"], "math", SAMPLES)
    store = load_file(stats["gram"][1] / "grams.safetensors")
    manifest = json.loads((stats["gram"][1] / "stats_manifest.json").read_text())
    assert manifest["tokens"] == inputs["model.layers.0.self_attn.q_proj.weight"].shape[0]
    assert manifest["samples"] == SAMPLES and manifest["domain"] == "math" and manifest["seed"] == 0
    assert manifest["architecture"] == [model.__class__.__name__]
    assert manifest["aliases"]["model.layers.1.self_attn.v_proj.weight"] == "model.layers.1.self_attn.q_proj.weight"
    assert manifest["aliases"]["model.layers.0.mlp.up_proj.weight"] == "model.layers.0.mlp.gate_proj.weight"
    assert len(store) == 4 * 2  # q/k/v, o, gate/up, down per layer: stored once each
    for name, x in inputs.items():
        key = manifest["aliases"].get(name, name)
        torch.testing.assert_close(store[key].double(), x.T @ x, rtol=1e-4, atol=1e-3, msg=name)
    # independent of hooks: q_proj's input is the input norm of the decoder's input hidden states
    tok = load_tokenizer(experts[1])
    samples = load_samples(str(world["data"]), SAMPLES, 0, "math")
    with torch.no_grad():
        x = torch.cat([model.model.layers[0].input_layernorm(model(
            input_ids=torch.tensor([sample_ids(tok, s, MAX_LEN)[0]]), output_hidden_states=True).hidden_states[0])[0]
            for s in samples]).double()
    torch.testing.assert_close(store["model.layers.0.self_attn.q_proj.weight"].double(), x.T @ x, rtol=1e-4, atol=1e-3)


def test_fisher_pass_equals_per_sample_gradients(world):
    from transformers import AutoModelForCausalLM

    base, experts, stats = world["llama"]
    model = AutoModelForCausalLM.from_pretrained(experts[0], dtype=torch.float32)
    tok = load_tokenizer(experts[0])
    samples = load_samples(str(world["data"]), SAMPLES, 0, "instruction")
    params = dict(model.named_parameters())
    want = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    for s in samples:
        prompt = tok(s.prompt)["input_ids"]
        ids = (prompt + tok(s.response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])[:MAX_LEN]
        labels = torch.tensor([[-100] * len(prompt) + ids[len(prompt):]])
        loss = model(input_ids=torch.tensor([ids]), labels=labels).loss  # HF's own shifted, masked mean NLL
        grads = torch.autograd.grad(loss, list(params.values()))
        for n, g in zip(params, grads, strict=True):
            want[n] += g.double() ** 2
    got = load_file(stats["fisher"][0] / "fisher.safetensors")
    assert set(got) == set(params)
    for n in params:
        torch.testing.assert_close(got[n].double(), want[n] / len(samples), rtol=1e-3, atol=1e-10, msg=n)
    manifest = json.loads((stats["fisher"][0] / "stats_manifest.json").read_text())
    assert manifest["samples_used"] == SAMPLES and manifest["kind"] == "fisher" and "response" in manifest["variant"]


def test_stats_bad_inputs_leave_nothing(world, tmp_path):
    base, experts, stats = world["llama"]
    r = CliRunner().invoke(main, ["stats", "--kind", "gram", "--model", str(experts[0]), "--data", "chemistry",
                                  "--samples", "2", "--out", str(tmp_path / "s")])
    assert r.exit_code == 1 and "unknown domain 'chemistry'" in r.output and "instruction" in r.output
    with pytest.raises(MergeBenchError, match="already exists"):
        compute_stats(StatsJob("gram", str(experts[0]), str(world["data"]), 2, str(stats["gram"][0]), domain="math"))
    with pytest.raises(MergeBenchError, match="cannot load a tokenizer"):
        compute_stats(StatsJob("gram", str(experts[0]), str(world["data"]), 2, str(tmp_path / "t"), domain="math",
                               tokenizer=str(tmp_path)))
    assert not list(tmp_path.iterdir())


# --- the methods, as pure functions ------------------------------------------------------------------


def _random_layer(t=3, tokens=40, d_in=6, d_out=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(tokens, d_in, generator=gen, dtype=torch.float64) for _ in range(t)]
    ws = [torch.randn(d_out, d_in, generator=gen, dtype=torch.float64) for _ in range(t)]
    w0 = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    return xs, ws, w0


def _ctx(stats, meta=None):
    return TensorContext("layers.0.q.weight", ["a", "b", "c"][: len(stats)], stats=stats,
                         stats_meta=meta or [{"tokens": 1, "mean": 1.0}] * len(stats))


def test_regmean_alpha_one_is_least_squares():
    xs, ws, w0 = _random_layer()
    tau = torch.stack([w - w0 for w in ws]).float()
    got = w0 + regmean(tau, _ctx([(x.T @ x).float() for x in xs]), {"alpha": 1.0, "gram_scale": "sum"}).double()
    x_all = torch.cat(xs)
    y_all = torch.cat([x @ w.T for x, w in zip(xs, ws, strict=True)])
    want = torch.linalg.lstsq(x_all, y_all).solution.T  # min Σ_t ||X_t Wᵀ − X_t W_tᵀ||²
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_regmean_alpha_zero_is_diagonal_weighted_average():
    xs, ws, w0 = _random_layer(seed=1)
    tau = torch.stack([w - w0 for w in ws]).float()
    grams = [(x.T @ x).float() for x in xs]
    got = regmean(tau, _ctx(grams), {"alpha": 0.0, "gram_scale": "sum"}).double()
    d = torch.stack([g.diagonal().double() for g in grams])  # [T, in]
    want = (d[:, None, :] * tau.double()).sum(0) / d.sum(0)  # per entry (o, i): Σ d_t[i] τ_t[o,i] / Σ d_t[i]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_regmean_mean_scale_and_non_linear_average():
    xs, ws, w0 = _random_layer(seed=2)
    tau = torch.stack([w - w0 for w in ws]).float()
    grams = [(x.T @ x).float() for x in xs]
    meta = [{"tokens": 10}, {"tokens": 20}, {"tokens": 40}]
    scaled = [g / m["tokens"] for g, m in zip(grams, meta, strict=True)]
    hp = {"alpha": 0.5, "gram_scale": "mean"}
    torch.testing.assert_close(regmean(tau, _ctx(grams, meta), hp),
                               regmean(tau, _ctx(scaled), {**hp, "gram_scale": "sum"}))
    norm = torch.randn(3, 5)
    assert torch.equal(regmean(norm, TensorContext("norm.weight", ["a", "b", "c"]), hp), norm.mean(0))


def test_regmean_singular_gram_warns_and_stays_finite():
    xs, ws, w0 = _random_layer(t=2, tokens=2, d_in=6, seed=3)  # 4 tokens for 6 inputs: rank 4 at most
    tau = torch.stack([w - w0 for w in ws]).float()
    grams = [(x.T @ x).float() for x in xs]
    for g in grams:  # exact zero rows/columns: singular for any alpha
        g[-1] = 0
        g[:, -1] = 0
    with pytest.warns(RuntimeWarning, match="singular.*pseudo-inverse"):
        got = regmean(tau, _ctx(grams), {"alpha": 1.0, "gram_scale": "sum"})
    assert torch.isfinite(got).all()
    a = sum(grams)
    want = (torch.linalg.pinv(a, hermitian=True) @ torch.einsum("tij,toj->io", torch.stack(grams), tau)).T
    torch.testing.assert_close(got, want)
    with warnings.catch_warnings():  # a regular Gram does not warn
        warnings.simplefilter("error")
        xs, ws, w0 = _random_layer(seed=4)
        regmean(torch.stack([w - w0 for w in ws]).float(), _ctx([(x.T @ x).float() for x in xs]),
                {"alpha": 0.5, "gram_scale": "sum"})


def test_fisher_equal_weights_average_and_floor():
    tau = torch.randn(3, 4, 5)
    equal = [torch.full((4, 5), 0.3)] * 3
    hp = {"epsilon": 1e-6, "normalize": False}
    torch.testing.assert_close(fisher(tau, _ctx(equal), hp), tau.mean(0))
    zeros = [torch.zeros(4, 5)] * 3  # nothing measured anywhere: the floor gives the plain average
    torch.testing.assert_close(fisher(tau, _ctx(zeros), hp), tau.mean(0))
    f = [torch.rand(4, 5) + 0.1 for _ in range(3)]
    want = sum(fi * ti for fi, ti in zip(f, tau, strict=True)) / sum(f)
    torch.testing.assert_close(fisher(tau, _ctx(f), hp), want)
    meta = [{"mean": 2.0}, {"mean": 4.0}, {"mean": 8.0}]
    normed = [fi / m["mean"] for fi, m in zip(f, meta, strict=True)]
    torch.testing.assert_close(fisher(tau, _ctx(f, meta), {**hp, "normalize": True}),
                               sum(fi * ti for fi, ti in zip(normed, tau, strict=True)) / sum(normed))


# --- the methods in the engine -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
def test_engine_regmean_is_least_squares_on_the_layer_inputs(world, tmp_path, kind):
    base, experts, stats = world[kind]
    r = CliRunner().invoke(main, ["merge", "-m", "regmean", "-b", str(base), *sum((["-e", str(e)] for e in experts), []),
                                  *sum((["--stats", str(s)] for s in stats["gram"]), []), "--set", "alpha=1",
                                  "-o", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    got, base_t = load_all(tmp_path / "m"), load_all(base)
    models = [load_all(e) for e in experts]
    inputs = [_layer_inputs(e, world["data"], d, SAMPLES)[1] for e, d in zip(experts, DOMAINS, strict=False)]
    checked = 0
    for name in base_t:
        if "embed" in name or name.startswith("lm_head"):
            assert torch.equal(got[name], base_t[name])
        elif name in inputs[0]:
            x_all = torch.cat([i[name] for i in inputs])
            y_all = torch.cat([i[name] @ m[name].double().T for i, m in zip(inputs, models, strict=True)])
            want = torch.linalg.lstsq(x_all, y_all).solution.T

            svals = torch.linalg.svdvals(x_all)
            if svals[0] / svals[-1] < 300:
                torch.testing.assert_close(got[name].double(), want, rtol=1e-3, atol=2e-4, msg=name)
                checked += 1
            else:  # the random tiny models' attention outputs are nearly collinear (cond(X) up to 5e4): fp32
                # Grams fix the weights only as far as fp32 allows, so ask only for a finite, better-than-
                # averaging fit of Σ_t ||X_t Wᵀ − X_t W_tᵀ||²
                def loss(w, x=x_all, y=y_all):
                    return float(((x @ w.T - y) ** 2).sum())

                mean = torch.stack([m[name].double() for m in models]).mean(0)
                assert torch.isfinite(got[name]).all() and loss(got[name].double()) < loss(mean), name
        else:  # norms: the plain average
            torch.testing.assert_close(got[name], torch.stack([m[name] for m in models]).mean(0), msg=name)
    assert checked >= 10  # q/k/v, gate/up and down of both layers at least
    manifest = json.loads((tmp_path / "m" / "merge_manifest.json").read_text())
    assert [s["domain"] for s in manifest["stats"]] == ["instruction", "math"]


def test_engine_fisher_matches_direct_weighted_average(world, tmp_path):
    base, experts, stats = world["llama"]
    out = merge(MergeJob("fisher", str(base), [str(e) for e in experts], str(tmp_path / "m"),
                         stats=[str(s) for s in stats["fisher"]], settings={"epsilon": 1e-12})).out
    got, base_t = load_all(out), load_all(base)
    models = [load_all(e) for e in experts]
    fishers = [load_file(s / "fisher.safetensors") for s in stats["fisher"]]
    for name in base_t:
        if "embed" in name or name.startswith("lm_head"):
            assert torch.equal(got[name], base_t[name])
            continue
        f = torch.stack([fi[name].double().clamp(min=1e-12) for fi in fishers])
        theta = torch.stack([m[name].double() for m in models])
        torch.testing.assert_close(got[name].double(), (f * theta).sum(0) / f.sum(0), rtol=1e-5, atol=1e-6)
    with pytest.warns(RuntimeWarning, match="below epsilon"):  # a floor above the Fisher values is flagged
        merge(MergeJob("fisher", str(base), [str(e) for e in experts], str(tmp_path / "m2"),
                       stats=[str(s) for s in stats["fisher"]], settings={"epsilon": 1.0}))


def test_engine_rejects_bad_statistics_and_writes_nothing(world, tmp_path):
    base, experts, stats = world["llama"]
    g_base, g_experts, g_stats = world["gemma2"]
    ex = [str(e) for e in experts]

    def fails(match, method="regmean", st=None, **kw):
        with pytest.raises(MergeBenchError) as e:
            merge(MergeJob(method, str(kw.pop("base", base)), kw.pop("experts", ex), str(tmp_path / "m"),
                           stats=[str(s) for s in (st if st is not None else stats["gram"])], **kw))
        assert match in one_line(e), str(e.value)
        assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.partial-*"))

    fails("needs gram statistics for each specialist", st=[])
    fails("needs gram statistics for each specialist", st=stats["gram"][:1])
    fails("needs gram (`mergebench stats --kind gram`)", st=stats["fisher"])
    fails("uses no statistics", method="soup")
    fails("weights differ from the specialist", st=stats["gram"][::-1])  # each specialist gets the other's
    fails("different architecture", st=[g_stats["gram"][0], stats["gram"][1]])
    fails("not a statistics directory", st=[tmp_path, stats["gram"][1]])
    # a statistics store that lacks one layer
    broken = tmp_path / "broken"
    broken.mkdir()
    grams = load_file(stats["gram"][1] / "grams.safetensors")
    del grams["model.layers.1.mlp.down_proj.weight"]
    save_file(grams, broken / "grams.safetensors")
    (broken / "stats_manifest.json").write_text((stats["gram"][1] / "stats_manifest.json").read_text())
    fails("no gram statistics for tensor model.layers.1.mlp.down_proj.weight", st=[stats["gram"][0], broken])
