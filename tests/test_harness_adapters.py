"""Each adapter builds exactly the command MergeBench's protocol needs, and reads back what it wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mergebench.errors import MergeBenchError
from mergebench.evaluation.adapters import bigcode, lmeval, safety

FIXTURES = Path(__file__).parent / "fixtures" / "published-results" / "Llama-3.2-3B-RegMeanPlusPlus"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def test_lmeval_argv_hf_backend():
    runs = lmeval.runs("/ws/models/m", "/ws/evals/m")
    assert [r.name for r in runs] == ["lmeval-math", "lmeval-multilingual", "lmeval-instruction"]
    math, multi, inst = runs
    assert math.argv == ("lm_eval", "--model", "hf", "--model_args", "pretrained=/ws/models/m,dtype=bfloat16",
                         "--tasks", "gsm8k_cot", "--batch_size", "auto", "--seed", "0",
                         "--output_path", "/ws/evals/m/lmeval/math", "--log_samples")
    assert multi.argv[multi.argv.index("--tasks") + 1] == (
        "m_mmlu_fr,m_mmlu_es,m_mmlu_de,m_mmlu_ru,arc_fr,arc_es,arc_de,arc_ru,"
        "hellaswag_fr,hellaswag_es,hellaswag_de,hellaswag_ru")
    assert multi.argv[multi.argv.index("--num_fewshot") + 1] == "0"
    assert inst.argv[inst.argv.index("--tasks") + 1] == "ifeval" and "--num_fewshot" in inst.argv
    assert all(r.env == {**OFFLINE, "NLTK_DATA": "/opt/nltk_data"} and r.gpus == 1 for r in runs)
    assert all(r.image == "lmeval" for r in runs)


def test_lmeval_argv_vllm_backend_and_errors():
    (run,) = lmeval.runs("/m", "/o", lmeval.LmEvalSettings(backend="vllm", seed=3), groups=("math",))
    assert run.argv[:5] == ("lm_eval", "--model", "vllm", "--model_args",
                            "pretrained=/m,dtype=bfloat16,gpu_memory_utilization=0.8,max_model_len=4096,"
                            "tensor_parallel_size=1")
    assert run.argv[run.argv.index("--seed") + 1] == "3"
    with pytest.raises(MergeBenchError, match="backend 'tgi'"):
        lmeval.LmEvalSettings(backend="tgi")
    with pytest.raises(MergeBenchError, match="task group 'poetry'"):
        lmeval.runs("/m", "/o", groups=("poetry",))


def test_bigcode_generation_and_sandboxed_execution_argv():
    runs = bigcode.runs("/ws/models/m", "/ws/evals/m")
    assert [r.name for r in runs] == ["bigcode-generate-humanevalplus", "bigcode-execute-humanevalplus",
                                      "bigcode-generate-mbppplus", "bigcode-execute-mbppplus"]
    gen, exe = runs[:2]
    sampling = ("--tasks", "humanevalplus", "--temperature", "0.2", "--top_p", "0.95", "--do_sample", "True",
                "--n_samples", "10", "--max_length_generation", "512", "--precision", "bf16",
                "--batch_size", "10", "--seed", "0")
    assert gen.argv == ("accelerate", "launch", "main.py", "--model", "/ws/models/m", *sampling,
                        "--generation_only", "--save_generations",
                        "--save_generations_path", "/ws/evals/m/bigcode/generations.json")
    assert exe.argv == ("python", "main.py", "--model", "/ws/models/m", *sampling, "--allow_code_execution",
                        "--load_generations_path", "/ws/evals/m/bigcode/generations_humanevalplus.json",
                        "--metric_output_path", "/ws/evals/m/bigcode/code_eval_humanevalplus.json")
    assert gen.gpus == 1 and not gen.sandboxed
    assert exe.gpus == 0 and exe.sandboxed
    from mergebench.runtimes.sandbox import SandboxPolicy

    policy = SandboxPolicy.from_images_yaml()  # what every runtime applies to it
    assert policy.read_only and policy.user != "0:0" and not policy.user.startswith("0:")
    assert exe.env["HF_ALLOW_CODE_EVAL"] == "1"


def test_bigcode_combines_per_task_metrics_into_one_record(tmp_path):
    published = json.loads((FIXTURES / "code_eval.json").read_text())
    out = tmp_path / "bigcode"
    out.mkdir()
    for task in bigcode.TASKS:
        (out / f"code_eval_{task}.json").write_text(json.dumps({task: published[task], "config": published["config"]}))
    record = bigcode.parse(tmp_path, "merged")
    assert record.metrics["humanevalplus"]["pass@1"] == published["humanevalplus"]["pass@1"]
    assert record.metrics["mbppplus"]["pass@1"] == published["mbppplus"]["pass@1"]
    (out / "code_eval_mbppplus.json").unlink()
    with pytest.raises(MergeBenchError, match="code_eval_mbppplus.json: the bigcode execution run for mbppplus"):
        bigcode.parse(tmp_path, "merged")


def test_safety_argv_env_and_parse(tmp_path):
    (run,) = safety.runs("/ws/models/m", tmp_path, safety.SafetySettings(gpus=(2, 3)))
    assert run.argv == ("python", "evaluation/eval.py", "generators", "--model_name_or_path", "/ws/models/m",
                        "--model_input_template_path_or_name", "llama3",
                        "--tasks", "wildguardtest,harmbench,xstest,do_anything_now",
                        "--report_output_path", f"{tmp_path}/safety/safety_eval.json",
                        "--save_individual_results_path", f"{tmp_path}/safety/all.json", "--use_vllm")
    assert run.env["CUDA_VISIBLE_DEVICES"] == "2,3" and run.gpus == 2 and run.env["OPENAI_API_KEY"]
    with pytest.raises(MergeBenchError, match="wrote no report for m1"):
        safety.parse(tmp_path, "m1")
    (tmp_path / "safety").mkdir()
    shutil.copy(FIXTURES / "safety_eval.json", tmp_path / "safety" / "safety_eval.json")
    assert safety.parse(tmp_path, "m1").metrics["wildguardtest"]["micro harm (lower)"] == 0.650200267022697
    with pytest.raises(MergeBenchError, match="task 'toxigen'"):
        safety.runs("/m", tmp_path, tasks=("toxigen",))


def test_lmeval_parse_reads_results_written_one_folder_down(tmp_path):
    target = tmp_path / "lmeval" / "math" / "ws__models__m"
    target.mkdir(parents=True)
    shutil.copy(FIXTURES / "lm_eval.json", target / "results_2025-01-01T00-00-00.json")
    (record,) = lmeval.parse(tmp_path, "m")
    assert record.metrics["gsm8k_cot"]["exact_match,flexible-extract"] == pytest.approx(0.4003, abs=5e-5)
    (tmp_path / "lmeval" / "ifeval").mkdir()
    (tmp_path / "lmeval" / "instruction").mkdir()
    with pytest.raises(MergeBenchError, match="lm_eval wrote no results_"):
        lmeval.parse(tmp_path, "m")


def test_eval_cli_runs_the_venvs_lm_eval_with_the_limit(tiny_run, tmp_path):
    """`.venv/bin/mergebench eval` with the venv not on PATH: the harness CLI is still the venv's own,
    and `--limit` reaches its argv (a smoke run is one). The real lm_eval then stops on the dataset it
    cannot fetch offline, with the kit's one-line error naming its log."""
    import os
    import subprocess
    import sys

    from tinypipeline import EXE

    model = next((tiny_run[0] / "models").glob("fetch-tiny-*")) / "base"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(PATH="/usr/bin:/bin", HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    run = subprocess.run([EXE, "eval", "--suite", "mergebench", "--harness", "lmeval", "--limit", "2",
                          "--model", str(model), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode != 0
    assert "--limit 2" in run.stderr and "not found" not in run.stderr
    log = next((tmp_path / "out" / "base").glob("lmeval-*.log")).read_text()
    assert "Couldn't reach 'openai/gsm8k' on the Hub (OfflineModeIsEnabled)" in log  # lm_eval itself ran ...
    assert f"{sys.prefix}/lib/" in log  # ... the venv's, found though PATH lacks the venv
    assert "exited with code" in run.stderr and str(Path(sys.executable).parent) not in env["PATH"]
    # the kit names the dataset and the stage that prepares it
    assert "dataset openai/gsm8k is not in the HF cache" in run.stderr and "--force fetch/lmeval" in run.stderr


def test_eval_limit_is_refused_where_the_harness_has_none(tiny_run, tmp_path):
    from click.testing import CliRunner

    from mergebench.cli.main import main

    model = next((tiny_run[0] / "models").glob("fetch-tiny-*")) / "base"
    result = CliRunner().invoke(main, ["eval", "--suite", "mergebench", "--harness", "safety", "--limit", "2",
                                       "--model", str(model), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "safety-eval has no row limit" in result.output


def test_a_stage_keeps_the_gpus_its_runtime_gave_it(tmp_path, monkeypatch):
    """safety-eval's adapter asks for GPU 0; inside a stage the runtime has already chosen (here the
    CUDA_VISIBLE_DEVICES double: GPU 3), and that choice wins. Outside a stage the adapter's applies."""
    import sys

    from mergebench.evaluation.adapters import HarnessRun
    from mergebench.evaluation.adapters.execute import run_processes

    probe = [sys.executable, "-c", "import os; print('visible=' + os.environ.get('CUDA_VISIBLE_DEVICES', '-'))"]
    env = dict(safety.runs("/m", str(tmp_path))[0].env)
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    run = HarnessRun("safety", "probe", "safety", tuple(probe), str(tmp_path), env)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    run_processes([run], "safety", "m", tmp_path / "given")
    assert (tmp_path / "given" / "probe.log").read_text().strip() == "visible=3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    run_processes([run], "safety", "m", tmp_path / "bare")
    assert (tmp_path / "bare" / "probe.log").read_text().strip() == "visible=0"
