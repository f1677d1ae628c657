"""The real recipe's path: batch split over GPUs, the ZeRO-3 config and launch the kit writes, the CLI.

The end-to-end tests run `mergebench finetune --model llama-3.2-3b` on a tiny Llama stored in a real HF
cache as meta-llama/Llama-3.2-3B, with DART-Math rows in that cache too. With DeepSpeed importable (not
in the default venv: see docs/finetune.md), ZeRO-3 runs for real on two CPU ranks (gloo) and must give
the native loop's weights.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hubcache import write_model, write_sft_datasets

from mergebench.catalog.prompts import format_prompt
from mergebench.cli import finetune_cmd
from mergebench.cli.main import main as cli
from mergebench.errors import MergeBenchError
from mergebench.finetune.distributed import deepspeed_config, launch_argv, parse_gpus, plan_batches
from mergebench.finetune.recipe import Recipe
from mergebench.finetune.trainer import _batch_indices

ROOT = Path(__file__).parent.parent
# `make test` installs DeepSpeed beside the venv (see the Makefile); the ranks find it on PYTHONPATH.
DS_SITE = ROOT / ".venv" / "deepspeed-site"
DS_PATH = {"PYTHONPATH": os.pathsep.join(filter(None, [str(DS_SITE), os.environ.get("PYTHONPATH")]))} \
    if (DS_SITE / "deepspeed").is_dir() else {}
HAS_DEEPSPEED = bool(DS_PATH) or importlib.util.find_spec("deepspeed") is not None
MATH = [{"query": f"What is {a} plus {b}?", "response": f"{a} plus {b} is {a + b}."} for a in range(8) for b in range(5)]
SMALL = ["--set", "global_batch=4", "--set", "micro_batch=1", "--set", "seq_len=128", "--set", "max_steps=3",
         "--set", "threads=1", "--set", "lr=1e-3"]


@pytest.mark.parametrize("world, micro, per_rank, accum", [
    (1, 4, 160, 40), (8, 4, 20, 5), (8, 1, 20, 20), (5, 4, 32, 8), (2, 2, 80, 40), (40, 4, 4, 1)])
def test_global_batch_160_splits_exactly(world, micro, per_rank, accum):
    plan = plan_batches(Recipe(micro_batch=micro), world)
    assert (plan.world, plan.per_rank, plan.accum, plan.global_batch) == (world, per_rank, accum, 160)
    assert plan.world * plan.micro_batch * plan.accum == 160


def test_ranks_share_each_global_batch_whatever_the_gpu_count():
    recipe = Recipe(micro_batch=2)
    for step in range(3):
        batch = _batch_indices(step, 5, 800, recipe)  # the same draw on every rank and for every world
        for world in (1, 2, 4, 8):
            plan = plan_batches(recipe, world)
            shards = [plan.shard(r, batch) for r in range(world)]
            assert sum(shards, []) == batch and all(len(s) == plan.per_rank for s in shards)
    with pytest.raises(ValueError, match="has 160 sequences, got 3"):
        plan_batches(recipe, 2).shard(0, [1, 2, 3])


def test_batch_splits_that_cannot_work_say_what_would():
    with pytest.raises(MergeBenchError) as e:
        plan_batches(Recipe(), 3)
    assert str(e.value) == ("global_batch=160 is not 3 GPUs × micro_batch=4 × a whole number of accumulation steps; "
                            "with micro_batch=4 use 1, 2, 4, 5, 8, 10, 20, 40 GPUs; 160 sequences cannot be shared "
                            "evenly by 3 GPUs")
    with pytest.raises(MergeBenchError, match="or keep 16 GPUs with micro_batch one of 1, 2, 5, 10$"):
        plan_batches(Recipe(), 16)


def test_zero3_config_for_llama_3_2_3b_on_8_gpus():
    recipe = Recipe(backend="deepspeed")
    assert deepspeed_config(recipe, plan_batches(recipe, 8), hidden_size=3072) == {
        "train_batch_size": 160, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 5,
        "gradient_clipping": 1.0, "bf16": {"enabled": True},
        "zero_optimization": {"stage": 3, "overlap_comm": True, "contiguous_gradients": True,
                              "stage3_gather_16bit_weights_on_model_save": True,
                              "reduce_bucket_size": 3072 * 3072, "stage3_prefetch_bucket_size": 8493465,
                              "stage3_param_persistence_threshold": 30720},
        "zero_allow_untested_optimizer": True, "steps_per_print": 1_000_000, "wall_clock_breakdown": False}
    plain = deepspeed_config(recipe.override(bf16=False, grad_clip=0.0, micro_batch=1), plan_batches(
        recipe.override(micro_batch=1), 8))
    assert (plain["bf16"], plain["gradient_clipping"], plain["gradient_accumulation_steps"]) == ({"enabled": False},
                                                                                               0.0, 20)
    assert "reduce_bucket_size" not in plain["zero_optimization"]  # width unknown: DeepSpeed's defaults


def test_launch_argv_and_gpu_selection(tmp_path):
    assert launch_argv(tmp_path / "job.json", 8, python="/venv/bin/python") == [
        "/venv/bin/python", "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "8",
        "-m", "mergebench.finetune.worker", str(tmp_path / "job.json")]
    assert parse_gpus("8", 0) == (8, None) and parse_gpus(None, 4) == (4, None)
    assert parse_gpus("0,2,3", 8) == (3, "0,2,3")
    for bad, match in [("two", "expected a count"), ("0,0", "expected a count"), ("0", "at least one GPU")]:
        with pytest.raises(MergeBenchError, match=match):
            parse_gpus(bad, 8)
    with pytest.raises(MergeBenchError, match="no GPU is visible; pass --gpus N"):
        parse_gpus(None, 0)


def invoke(args):
    return CliRunner().invoke(cli, args)


def test_dry_run_shows_the_real_recipe_on_one_node(tmp_path):
    out = tmp_path / "family"
    res = invoke(["finetune", "--model", "llama-3.2-3b", "--domain", "math", "--out", str(out), "--deepspeed",
                  "--gpus", "0,1,2,3,4,5,6,7", "--dry-run"])
    assert res.exit_code == 0, res.output
    (plan,) = json.loads(res.output)
    r = plan["recipe"]
    assert (r["lr"], r["scheduler"], r["warmup_ratio"], r["epochs"], r["global_batch"], r["seq_len"], r["packing"],
            r["bf16"], r["template"], r["backend"]) == (2e-5, "cosine", 0.1, 2.0, 160, 2048, True, True, "alpaca",
                                                        "deepspeed")
    assert plan["base"] == "meta-llama/Llama-3.2-3B" and plan["out"] == str(out / "math")
    assert plan["batch"] == {"world": 8, "global_batch": 160, "per_rank": 20, "micro_batch": 4, "accum": 5}
    config = plan["deepspeed_config"]
    assert config["zero_optimization"]["stage"] == 3 and config["gradient_accumulation_steps"] == 5
    assert config["train_batch_size"] == 160 and config["bf16"] == {"enabled": True}
    assert plan["launch"] == launch_argv(out / ".math.tmp" / "launch" / "job.json", 8)
    assert plan["env"] == {"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
    assert plan["datasets"] == [{"domain": "math", "repo": "hkust-nlp/dart-math-hard", "config": None, "split": "train",
                                 "gated": False, "fetch": "`hf download hkust-nlp/dart-math-hard --repo-type dataset`"}]
    assert not out.exists()  # a dry run writes nothing
    res = invoke(["finetune", "-m", "gemma-2-2b", "-d", "all", "-o", str(out), "--set", "micro_batch=2", "--set",
                  "lr=5e-4", "--dry-run"])  # 5e-4 is a string to YAML 1.1; the kit reads it as a number
    plans = json.loads(res.output)
    assert plans[0]["recipe"]["lr"] == 5e-4 and plans[0]["recipe"]["micro_batch"] == 2
    assert [p["name"] for p in plans] == ["instruction", "math", "multilingual", "coding", "safety", "multitask"]
    assert plans[0]["launch"] is None and plans[0]["batch"]["accum"] == 80 and plans[0]["backend"] == "native"
    assert [d["repo"] for d in plans[-1]["datasets"]] == [
        "allenai/tulu-3-sft-personas-instruction-following", "hkust-nlp/dart-math-hard", "CohereForAI/aya_dataset",
        "ise-uiuc/Magicoder-Evol-Instruct-110K", "allenai/wildguardmix"]


@pytest.mark.parametrize("args, message", [
    (["-m", "tiny", "-d", "math", "--deepspeed"], "--deepspeed, --gpus and --dry-run are for the MergeBench bases"),
    (["-m", "llama-3.2-3b", "-d", "math", "--gpus", "2", "--dry-run"], "--gpus needs --deepspeed"),
    (["-m", "llama-3.2-3b", "-d", "math", "--deepspeed", "--gpus", "3", "--dry-run"], "use 1, 2, 4, 5, 8, 10"),
    (["-m", "llama-3.2-3b", "-d", "math", "--deepspeed", "--dry-run"], "no GPU is visible"),
    (["-m", "llama-3.2-3b", "-d", "math", "--set", "safety_responses=some", "--dry-run"], "expected one of unharmful"),
    (["-m", "llama-3.2-3b", "-d", "chemistry"], "unknown domain 'chemistry'"),
])
def test_cli_errors_are_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.setattr(finetune_cmd, "visible_gpus", lambda: 0)
    res = invoke(["finetune", *args, "--out", str(tmp_path / "f")])
    assert res.exit_code == 1 and message in res.output and res.output.count("\n") == 1, res.output


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """An HF cache with MergeBench's training sets and a tiny Llama (tied, no pad token) as Llama-3.2-3B."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from mergebench.tiny.tokenizer import save_tokenizer, train_tokenizer

    root = tmp_path_factory.mktemp("hub")
    write_sft_datasets(root / "hf", dart=MATH)
    model = root / "model"
    save_tokenizer(train_tokenizer([format_prompt(r["query"]) + r["response"] for r in MATH], vocab_size=300), model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    del config["pad_token"]  # like Llama 3: padding falls back to EOS
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (model / "special_tokens_map.json").unlink()
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                 tie_word_embeddings=True)).save_pretrained(model)
    return root


def run_cli(hub: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **DS_PATH, "HF_HOME": str(hub / "hf"), "PYTHONUNBUFFERED": "1"}
    for var in ("HF_HUB_CACHE", "HF_DATASETS_CACHE"):
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "mergebench.cli.main", "finetune", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_real_family_trains_from_the_hf_cache(hub, tmp_path):
    """Llama-3.2-3B's path on one device: the real recipe (bf16, packing, alpaca) with only the sizes cut."""
    out = tmp_path / "family"
    res = run_cli(hub, "-m", "llama-3.2-3b", "-d", "math", "-o", str(out), *SMALL)
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr.strip().startswith("error: meta-llama/Llama-3.2-3B: not a local directory and not in the Hugging "
                                         "Face cache") and res.stderr.strip().count("\n") == 0
    write_model(hub / "hf", "meta-llama/Llama-3.2-3B", hub / "model")
    res = run_cli(hub, "-m", "llama-3.2-3b", "-d", "math", "-o", str(out), *SMALL)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "math: wrote" in res.stdout and "step 3/3" in res.stdout
    manifest = json.loads((out / "math" / "manifest.json").read_text())
    assert manifest["init"] == "meta-llama/Llama-3.2-3B" and manifest["steps"] == 3 and manifest["world"] == 1
    assert (manifest["recipe"]["bf16"], manifest["recipe"]["packing"], manifest["recipe"]["template"]) == (
        True, True, "alpaca")
    assert manifest["data"][0]["repo"] == "hkust-nlp/dart-math-hard" and manifest["data"][0]["kept"] == 40
    assert manifest["train_rows"] == 40
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / "math")
    assert model.dtype == torch.bfloat16  # published like MergeBench's specialists
    res = run_cli(hub, "-m", "llama-3.2-3b", "-d", "math", "-o", str(out), *SMALL)
    assert res.returncode == 0 and "math: complete, skipped" in res.stdout


@pytest.mark.skipif(not HAS_DEEPSPEED, reason="deepspeed is not installed (make venv puts it in .venv/deepspeed-site)")
def test_zero3_on_two_cpu_ranks_matches_the_native_loop(hub, tmp_path):
    from safetensors.torch import load_file

    write_model(hub / "hf", "meta-llama/Llama-3.2-3B", hub / "model")
    fp32 = [*SMALL, "--set", "bf16=false", "--set", "packing=false"]
    native = run_cli(hub, "-m", "llama-3.2-3b", "-d", "math", "-o", str(tmp_path / "native"), *fp32)
    assert native.returncode == 0, native.stderr
    ds = run_cli(hub, "-m", "llama-3.2-3b", "-d", "math", "-o", str(tmp_path / "ds"), "--deepspeed", "--gpus", "2", *fp32)
    assert ds.returncode == 0, ds.stdout + ds.stderr
    job = tmp_path / "ds" / "math" / "launch" / "job.json"
    assert f"math: {' '.join(launch_argv(tmp_path / 'ds' / '.math.tmp' / 'launch' / 'job.json', 2))}" in ds.stderr
    config = json.loads((job.parent / "deepspeed.json").read_text())
    assert (config["train_batch_size"], config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"],
            config["zero_optimization"]["reduce_bucket_size"]) == (4, 1, 2, 32 * 32)
    assert json.loads(job.read_text())["world"] == 2
    a, b = load_file(tmp_path / "native" / "math" / "model.safetensors"), load_file(tmp_path / "ds" / "math" / "model.safetensors")
    start = load_file(hub / "model" / "model.safetensors")
    assert sorted(a) == sorted(b)
    assert max((a[k] - start[k]).abs().max().item() for k in a) > 1e-4  # it trained
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6  # and ZeRO-3 optimized the same objective
    ma, mb = (json.loads((tmp_path / d / "math" / "manifest.json").read_text()) for d in ("native", "ds"))
    assert (ma["final_loss"], ma["train_sha256"]) == (mb["final_loss"], mb["train_sha256"])
    assert (mb["world"], mb["recipe"]["backend"]) == (2, "deepspeed")


@pytest.mark.skipif(not HAS_DEEPSPEED, reason="deepspeed is not installed (make venv puts it in .venv/deepspeed-site)")
def test_zero3_run_resumes_bit_identical(hub, tmp_path):
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                          "--nproc-per-node", "2", str(Path(__file__).parent / "ds_resume.py"), str(hub / "model"),
                          str(tmp_path)], cwd=ROOT, env={**os.environ, **DS_PATH}, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resumed_from=2 steps=4" in res.stdout
    straight, resumed = ((tmp_path / d / "model.safetensors").read_bytes() for d in ("straight", "resumed"))
    assert straight == resumed
    assert not (tmp_path / ".resumed.tmp").exists()
