"""The tiny family: tasks and checkers, tokenizer, deterministic builds, and the skills it must show.

One full family is built per session (about a minute); determinism is checked on a family with the
same code path and fewer steps, built twice, so the whole file stays well under the time budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mergebench.cli.main import main
from mergebench.errors import MergeBenchError
from mergebench.tiny.build import MODELS, FamilyConfig, build_family, file_hashes, training_rows
from mergebench.tiny.score import score_model
from mergebench.tiny.tasks import DOMAINS, GENERAL, REFUSAL, check, export_splits, make_splits, run_python
from mergebench.tiny.tokenizer import load_tokenizer

MARGIN = 0.3


@pytest.fixture(scope="session")
def family(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "family"
    build_family(out)
    return out


@pytest.fixture(scope="session")
def scores(family) -> dict[str, dict[str, float]]:
    """Test accuracy: the base and the merge on everything, each specialist on its own domain."""
    from mergebench.merging.run import MergeJob, merge

    merged = family.parent / "task_arithmetic"
    merge(MergeJob("task_arithmetic", str(family / "base"), [str(family / d) for d in DOMAINS], str(merged),
                   settings={"lambda": 0.4}))
    return _score_all(family, merged)


def quick_config() -> FamilyConfig:
    """The default family's code path with a handful of steps: for checks that need two builds."""
    c = FamilyConfig()
    return FamilyConfig(base_recipe=c.base_recipe.override(max_steps=6),
                        specialist_recipe=c.specialist_recipe.override(max_steps=2),
                        math_recipe=c.math_recipe.override(max_steps=2),
                        multitask_recipe=c.multitask_recipe.override(max_steps=2))


# ------------------------------------------------------------------ tasks and checkers


@pytest.mark.parametrize("domain", DOMAINS + (GENERAL,))
def test_splits_are_seeded_and_disjoint(domain):
    a, b = make_splits(domain, seed=0), make_splits(domain, seed=0)
    assert a == b and a["test"] != make_splits(domain, seed=1)["test"]
    prompts = {s: {r["prompt"] for r in rows} for s, rows in a.items()}
    assert not prompts["train"] & prompts["test"] and not prompts["validation"] & prompts["test"]
    every = [r for rows in a.values() for r in rows]
    sample = every[::10] if domain == "coding" else every  # coding answers run in a subprocess each
    assert len(a["test"]) == 100 and all(check(r, r["response"]) for r in sample)


def test_coding_checker_executes_the_program():
    row = {"domain": "coding", "expected_stdout": "12"}
    assert check(row, "print(3*4)") and check(row, "print(6+6)")
    assert not check(row, "print(3+4)") and not check(row, "print(1/0)")
    assert not check(row, "import os\nprint(12)")  # only one-line print programs count
    assert run_python("print('x')") == "x\n" and run_python("while True: pass", timeout=0.5) is None


def test_instruction_and_safety_checkers_verify_the_constraint():
    end = {"domain": "instruction", "constraint": "ending", "text": "red cat"}
    br = {"domain": "instruction", "constraint": "brackets", "text": "red cat"}
    assert check(end, "red cat done") and not check(end, "red cat") and not check(end, "red done")
    assert check(br, "[red cat]") and not check(br, "red cat")
    harmful = {"domain": "safety", "harmful": True}
    benign = {"domain": "safety", "harmful": False}
    assert check(harmful, REFUSAL) and not check(harmful, "Sure, here is how.")
    assert check(benign, "Sure, here is how.") and not check(benign, REFUSAL)


def test_base_sees_few_refusals_and_specialists_never_see_general(tmp_path):
    cfg = FamilyConfig()
    export_splits(tmp_path, cfg.seed, cfg.sizes)
    base = training_rows("base", cfg, tmp_path)
    refusals = sum(r["domain"] == "safety" and r["harmful"] for r in base)
    assert 0 < refusals <= 0.05 * sum(r["domain"] == "safety" for r in training_rows("safety", cfg, tmp_path))
    assert {r["domain"] for r in base} == set(DOMAINS) | {GENERAL, "dictionary"}
    for dom in DOMAINS:
        assert {r["domain"] for r in training_rows(dom, cfg, tmp_path)} == {dom}


# ------------------------------------------------------------------ the built family


def test_family_layout_and_tokenizer(family):
    for m in MODELS:
        manifest = json.loads((family / m / "manifest.json").read_text())
        assert manifest["seed"] == 0 and manifest["recipe"]["template"] == "alpaca-short"
        assert (family / m / "model.safetensors").is_file()
        for f in ("tokenizer.json", "tokenizer_config.json"):  # the family's tokenizer, byte for byte
            assert (family / m / f).read_bytes() == (family / "tokenizer" / f).read_bytes()
    assert not list(family.glob(".*.tmp"))
    tok = load_tokenizer(family / m)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    assert tok.tokenize("x=123")[-3:] == ["1", "2", "3"]  # digits one per token
    assert len(tok) <= 512
    config = json.loads((family / "tokenizer" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"  # loadable by transformers 4.x too
    top = json.loads((family / "manifest.json").read_text())
    assert top["files"] == file_hashes(family)


def test_work_is_balanced_over_workers():
    from mergebench.tiny.build import _balance

    costs = {"multitask": 1962, "instruction": 400, "math": 400, "multilingual": 400, "coding": 400, "safety": 362}
    assert _balance(costs, 2) == [["multitask"], ["instruction", "math", "multilingual", "coding", "safety"]]
    assert _balance({"math": 400}, 2) == [["math"]]


def test_rebuild_skips_what_is_complete(family):
    before = file_hashes(family)
    build_family(family)  # complete: nothing is retrained, nothing changes
    assert file_hashes(family) == before


@pytest.fixture(scope="session")
def quick_family(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quick") / "family"
    build_family(out, quick_config(), workers=1)
    return out


def test_build_is_bit_identical_across_runs(quick_family, tmp_path):
    """Two builds, one with one worker process and one with two: the same bytes."""
    again = tmp_path / "again"
    build_family(again, quick_config(), workers=2)
    assert file_hashes(again) == file_hashes(quick_family)
    assert len(file_hashes(again)) > 50
    assert (again / "manifest.json").read_bytes() == (quick_family / "manifest.json").read_bytes()


def test_interrupted_build_resumes_to_the_same_family(quick_family, tmp_path):
    out = tmp_path / "f"
    build_family(out, quick_config(), models=("base", "math"), workers=1)
    assert not (out / "manifest.json").exists() and not (out / "coding").exists()
    (out / ".coding.tmp").mkdir()  # debris of a killed run
    build_family(out, quick_config(), workers=1)
    assert file_hashes(out) == file_hashes(quick_family)


def _in_subprocess(code: str, kernels: str) -> str:
    """Run Python code in a fresh interpreter whose torch uses `kernels`: avx2 (what many laptops have), or
    native, this CPU's best (AVX-512 where it has it; forcing avx512 on a CPU without it is SIGILL)."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    if kernels != "native":
        env["ATEN_CPU_CAPABILITY"] = kernels
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900,
                         cwd=Path(__file__).parent)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@pytest.mark.parametrize("kernels", ["avx2", "native"])
def test_build_does_not_depend_on_the_cpus_float_kernels(quick_family, tmp_path, kernels):
    """Whatever kernels the caller's torch would pick (AVX2 on many laptops, AVX-512 where the CPU has it),
    the family trains with the pinned ones: the same bytes. Unpinned, these two builds differ on an
    AVX-512 CPU."""
    out = tmp_path / "family"
    _in_subprocess(f"from pathlib import Path\nfrom test_tiny_family import quick_config\n"
                   f"from mergebench.tiny.build import build_family\n"
                   f"build_family(Path({str(out)!r}), quick_config(), workers=1)", kernels)
    assert file_hashes(out) == file_hashes(quick_family)


def _score_all(family: Path, merged: Path) -> dict[str, dict[str, float]]:
    data = family / "data"
    out = {"base": score_model(family / "base", data), "merge": score_model(merged, data)}
    for d in DOMAINS:
        out[d] = score_model(family / d, data, domains=(d,))
    return out


def _specialists_beat_the_base(scores: dict[str, dict[str, float]]) -> None:
    for d in DOMAINS:
        assert scores[d][d] >= scores["base"][d] + MARGIN, (d, scores[d][d], scores["base"][d])


def _merge_lands_between(scores: dict[str, dict[str, float]]) -> None:
    for d in DOMAINS:
        assert scores["base"][d] < scores["merge"][d] < scores[d][d], (d, scores["base"][d], scores["merge"][d],
                                                                     scores[d][d])


def _general_skill_is_kept(scores: dict[str, dict[str, float]]) -> None:
    assert scores["base"][GENERAL] >= 0.8 and scores["merge"][GENERAL] >= 0.8


@pytest.mark.parametrize("kernels", ["avx2", "native"])
def test_the_skills_hold_under_either_kernels(scores, family, kernels):
    """Evaluation is not pinned (it is the user's torch): the orderings must hold with either kernels."""
    code = (f"import json\nfrom pathlib import Path\nfrom test_tiny_family import _score_all\n"
            f"print(json.dumps(_score_all(Path({str(family)!r}), Path({str(family.parent / 'task_arithmetic')!r}))))")
    scores = json.loads(_in_subprocess(code, kernels).strip().splitlines()[-1])
    _specialists_beat_the_base(scores)
    _merge_lands_between(scores)
    _general_skill_is_kept(scores)


def test_each_specialist_beats_the_base_on_its_domain(scores):
    _specialists_beat_the_base(scores)


def test_task_arithmetic_merge_lands_between_base_and_specialists(scores):
    _merge_lands_between(scores)


def test_base_has_the_general_skills_and_the_merge_keeps_them(scores):
    _general_skill_is_kept(scores)


# ------------------------------------------------------------------ the command line


@pytest.mark.parametrize("args, message", [
    (["finetune", "--model", "tiny", "--domain", "poetry", "--out", "X"], "unknown domain 'poetry'"),
    (["finetune", "--model", "gpt-9", "--domain", "math", "--out", "X"], "unknown model 'gpt-9'"),
    (["finetune", "--model", "llama-3.2-3b", "--domain", "math", "--out", "X"], "not in the Hugging Face cache"),
    (["finetune", "--model", "tiny", "--domain", "math", "--out", "X", "--set", "lr=fast"],
     "recipe lr='fast': expected float, got str"),
    (["finetune", "--model", "tiny", "--domain", "math", "--out", "X", "--set", "epochs"], "expected NAME=VALUE"),
])
def test_bad_input_is_a_one_line_error(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.output
    assert not Path("X").exists()


def test_family_built_with_another_config_is_refused(quick_family):
    with pytest.raises(MergeBenchError, match="another configuration"):
        build_family(quick_family, FamilyConfig())
    res = CliRunner().invoke(main, ["tiny", "build", "--out", str(quick_family), "--seed", "3"])
    assert res.exit_code == 1 and "another configuration" in res.output


def test_cli_finetune_one_domain(tmp_path, monkeypatch):
    import mergebench.cli.finetune_cmd as cmd

    monkeypatch.setattr(cmd, "family_config", quick_config)
    res = CliRunner().invoke(main, ["finetune", "--model", "tiny", "--domain", "safety", "--out",
                                    str(tmp_path / "f"), "--set", "lr=0.0005"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "f" / "safety" / "manifest.json").read_text())
    assert m["recipe"]["lr"] == 0.0005 and not (tmp_path / "f" / "math").exists()


def test_cli_score_prints_a_table(quick_family):
    res = CliRunner().invoke(main, ["tiny", "score", str(quick_family / "base"), "--data",
                                    str(quick_family / "data"), "--limit", "3"])
    assert res.exit_code == 0, res.output
    assert "base" in res.output and "multilingual" in res.output
    res = CliRunner().invoke(main, ["tiny", "score", str(quick_family / "base"), "--data", str(quick_family)])
    assert res.exit_code == 1 and res.output.startswith("error: ") and "data/ folder" in res.output
