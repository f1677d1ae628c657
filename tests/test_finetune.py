"""The SFT code path: recipe validation, the paper's recipe on a tiny model, resumption."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch

from mergebench.errors import MergeBenchError
from mergebench.finetune.data import encode, pack
from mergebench.finetune.recipe import TINY_RECIPE, Recipe
from mergebench.finetune.trainer import finetune, is_complete, plan_steps
from mergebench.tiny.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
from mergebench.tokens import IGNORE

ROWS = [{"prompt": f"Copy: {a} {b}", "response": f"{a} {b}"} for a in ("cat", "dog", "sun", "moon")
        for b in ("red", "blue", "7", "42")]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    save_tokenizer(train_tokenizer([r["prompt"] + " " + r["response"] for r in ROWS], vocab_size=300), out)
    return load_tokenizer(out)


def tiny_config(tok):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                       tie_word_embeddings=False, pad_token_id=tok.pad_token_id)


def digest(d: Path) -> str:
    return hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()


def test_real_recipe_defaults_are_the_papers():
    r = Recipe()
    assert (r.lr, r.scheduler, r.warmup_ratio, r.epochs, r.global_batch, r.seq_len, r.bf16, r.packing) == (
        2e-5, "cosine", 0.1, 2.0, 160, 2048, True, True)
    assert (r.weight_decay, r.grad_clip, r.template) == (0.0, 1.0, "alpaca")


@pytest.mark.parametrize("changes, match", [
    ({"lr": "fast"}, r"recipe lr='fast': expected float, got str"),
    ({"global_batch": 1.5}, r"expected int, got float"),
    ({"bf16": "yes"}, r"expected bool"),
    ({"max_steps": "3"}, r"expected int or None"),
    ({"learning_rate": 1e-3}, r"unknown recipe setting 'learning_rate'"),
    ({"scheduler": "cyclic"}, r"expected one of cosine"),
    ({"global_batch": 10, "micro_batch": 4}, r"not a multiple"),
])
def test_bad_recipe_values_are_one_line_errors(changes, match):
    with pytest.raises(MergeBenchError, match=match) as e:
        Recipe().override(**changes)
    assert "\n" not in str(e.value)


def test_equal_recipes_have_one_key():
    assert Recipe(epochs=3).key() == Recipe(epochs=3.0).key() and Recipe(epochs=3).epochs == 3.0


def test_loss_is_on_the_response_only(tok):
    ex = encode(tok, "Copy: cat red", "cat red", 512, "alpaca")
    n_resp = len(tok("cat red", add_special_tokens=False)["input_ids"]) + 1  # + EOS
    assert ex.labels[-n_resp:] == ex.input_ids[-n_resp:]
    assert all(t == IGNORE for t in ex.labels[:-n_resp])
    assert ex.input_ids[0] == tok.bos_token_id and ex.input_ids[-1] == tok.eos_token_id
    blocks = pack([ex] * 5, 64, tok.pad_token_id)
    assert all(len(b.input_ids) == 64 for b in blocks[:-1])
    assert sum(len(b.input_ids) for b in blocks) == 5 * len(ex.input_ids)


def test_real_recipe_code_path_runs_a_few_steps(tok, tmp_path):
    """The paper's recipe (bf16 autocast, packing, alpaca template, cosine) with only the sizes cut."""
    recipe = Recipe().override(max_steps=3, global_batch=4, micro_batch=2, seq_len=48, threads=1)
    assert plan_steps(100, recipe)[1] == 3
    res = finetune(tiny_config(tok), tok, ROWS * 4, recipe, tmp_path / "m")
    assert res.steps == 3 and is_complete(tmp_path / "m") and torch.isfinite(torch.tensor(res.final_loss))
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    with pytest.raises(MergeBenchError, match="already complete"):
        finetune(tiny_config(tok), tok, ROWS, recipe, tmp_path / "m")


def test_deepspeed_backend_says_how_it_runs(tok, tmp_path, monkeypatch):
    with pytest.raises(MergeBenchError, match=r"runs one process per GPU: start it with `mergebench finetune "
                                              r"--model <family> --deepspeed` \(torchrun\)"):
        finetune(tiny_config(tok), tok, ROWS, Recipe(backend="deepspeed"), tmp_path / "m", ds_config={})
    for var, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(var, value)
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # as if it were not installed
    with pytest.raises(MergeBenchError, match="needs the deepspeed package"):
        finetune(tiny_config(tok), tok, ROWS, Recipe(backend="deepspeed"), tmp_path / "m", ds_config={})
    assert not (tmp_path / ".m.tmp").exists()  # refused before anything was written


def test_interrupted_run_resumes_bit_identical(tok, tmp_path):
    recipe = TINY_RECIPE.override(global_batch=8, micro_batch=4, epochs=3.0, save_every=2)
    rows = ROWS * 2
    finetune(tiny_config(tok), tok, rows, recipe, tmp_path / "straight")
    part = finetune(tiny_config(tok), tok, rows, recipe, tmp_path / "resumed", halt_after=3)
    assert not is_complete(tmp_path / "resumed") and part.steps == 3
    res = finetune(tiny_config(tok), tok, rows, recipe, tmp_path / "resumed")
    assert res.resumed_from == 3 and res.steps == plan_steps(len(rows), recipe)[1]
    assert digest(tmp_path / "straight") == digest(tmp_path / "resumed")
    assert not (tmp_path / ".resumed.tmp").exists()


def test_data_passes_encode_pad_and_score_exactly_as_finetuning(tok):
    """One encoding for training and statistics: a validation sample gives the training row's tokens and
    labels; padding carries no label; the per-sample response NLL is HF's own masked mean."""
    from transformers import LlamaForCausalLM

    from mergebench.finetune.data import format_prompt
    from mergebench.merging.datapass.model import encode_sample, sample_ids
    from mergebench.merging.datapass.samples import Sample
    from mergebench.tokens import pad_batch, response_nll

    rows = [("Copy: cat red", "cat red"), ("Copy: dog blue 42", "dog blue 42")]
    trained = [encode(tok, p, r, 512, "alpaca") for p, r in rows]
    sampled = [encode_sample(tok, Sample(format_prompt(p, "alpaca"), r), 512) for p, r in rows]
    assert trained == sampled
    ids, start = sample_ids(tok, Sample(format_prompt(rows[0][0], "alpaca"), rows[0][1]), 512)
    assert ids == trained[0].input_ids and trained[0].labels[start - 1] == IGNORE != trained[0].labels[start]
    short = encode(tok, *rows[0], 5, "alpaca")  # the prompt alone is longer: no response token is left
    assert short.response_start == 5 and set(short.labels) == {IGNORE}
    batch = pad_batch(trained, tok.pad_token_id)
    width = max(len(e.input_ids) for e in trained)
    assert batch["input_ids"].shape == (2, width) and int(batch["attention_mask"][0].sum()) == len(trained[0].input_ids)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(tok)).eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        per_sample = response_nll(logits, batch["labels"])
        for i, e in enumerate(trained):
            hf = model(input_ids=torch.tensor([e.input_ids]), labels=torch.tensor([e.labels])).loss
            torch.testing.assert_close(per_sample[i], hf, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(response_nll(logits[i, :len(e.input_ids)], batch["labels"][i, :len(e.input_ids)],
                                                    reduction="mean"), hf, rtol=1e-5, atol=1e-6)
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        total = sum(float(per_sample[i]) * sum(1 for t in e.labels[1:] if t != IGNORE) for i, e in enumerate(trained))
        assert abs(float(response_nll(logits, batch["labels"], reduction="sum")) - total) < 1e-3 * n
    with pytest.raises(ValueError, match="unknown reduction 'max'"):
        response_nll(logits, batch["labels"], reduction="max")
