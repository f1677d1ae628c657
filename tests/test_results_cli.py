"""`results import` shows, stores and prints the unified results, and writes nothing when input is bad."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mergebench.cli.results_cmd import results
from mergebench.evaluation.store import RESULTS_FILENAME, read_records

PUBLISHED = Path(__file__).parent / "fixtures" / "published-results"
SMALL = PUBLISHED / "Llama-3.2-3B-RegMeanPlusPlus"
LARGE = PUBLISHED / "Llama-3.1-8B-RegMeanPlusPlus"


@pytest.fixture
def folder(tmp_path) -> Path:
    target = tmp_path / SMALL.name
    shutil.copytree(SMALL, target)
    return target


def run(*args: str):
    return CliRunner().invoke(results, ["import", *args], env={"COLUMNS": "200"})


def test_import_prints_tables_and_stores_the_records(folder):
    result = run(str(folder))
    assert result.exit_code == 0, result.output
    for fragment in (
        "gsm8k_cot",
        "exact_match,flexible-extract",
        "0.4003",
        "humanevalplus",
        "0.3104",
        "micro harm (lower)",
        "0.6502",
        "Domain scores",
        "multilingual",
        "0.3855",
    ):
        assert fragment in result.output, fragment
    stored = folder / RESULTS_FILENAME
    records = read_records(stored)
    assert [r.harness for r in records] == ["lmeval", "bigcode", "safety"]
    assert records[0].metrics["gsm8k_cot"]["exact_match,flexible-extract"] == 0.400303260045489
    document = json.loads(stored.read_text())
    assert document["model"] == SMALL.name
    assert document["scores"]["domains"]["math"] == 0.400303260045489
    assert document["scores"]["variants"]["ifeval"] == "mean"
    assert document["scores"]["incomplete"] == {}


def test_json_output_parses_and_matches_the_stored_file(folder, tmp_path):
    out = tmp_path / "elsewhere" / "scores.json"
    result = run(str(folder), "--json", "--out", str(out), "--model", "rm++3b")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads(out.read_text())
    assert not (folder / RESULTS_FILENAME).exists()
    assert printed["model"] == "rm++3b"
    assert {r["harness"] for r in printed["records"]} == {"lmeval", "bigcode", "safety"}
    bigcode = next(r for r in printed["records"] if r["harness"] == "bigcode")
    assert bigcode["metrics"]["humanevalplus"]["pass@1"] == 0.31036585365853653
    assert printed["scores"]["domains"]["coding"] == pytest.approx(
        (0.31036585365853653 + 0.4304232804232804) / 2
    )


def test_variant_option_changes_the_score(folder):
    result = run(str(folder), "--json", "--variant", "gsm8k_cot=exact_match,strict-match")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)["scores"]
    assert scores["domains"]["math"] == 0.3510235026535254
    assert scores["variants"]["gsm8k_cot"] == "exact_match,strict-match"


def test_partial_folder_scores_what_it_can(tmp_path):
    shutil.copy(LARGE / "code_eval.json", tmp_path / "code_eval.json")
    result = run(str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)["scores"]
    assert scores["domains"] == {"coding": pytest.approx((0.47317073170731705 + 0.5732804232804233) / 2)}
    assert set(scores["incomplete"]) == {"instruction", "math", "multilingual", "safety"}
    assert "incomplete" in run(str(tmp_path)).output


def assert_failed_without_writing(result, folder: Path, *fragments: str):
    assert result.exit_code != 0
    assert result.output.startswith("Error: ")
    assert result.output.count("\n") == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output
    assert not (folder / RESULTS_FILENAME).exists()
    assert not list(folder.glob(f".{RESULTS_FILENAME}*"))


def test_truncated_file_fails_and_writes_nothing(folder):
    text = (folder / "lm_eval.json").read_text()
    (folder / "lm_eval.json").write_text(text[:5000])
    assert_failed_without_writing(run(str(folder)), folder, "lm_eval.json", "not valid JSON")
    assert_failed_without_writing(run(str(folder), "--json"), folder, "not valid JSON")


def test_removed_metric_fails_and_writes_nothing(folder, tmp_path):
    data = json.loads((folder / "safety_eval.json").read_text())
    del data["harmbench"]["micro ASR (lower)"]
    (folder / "safety_eval.json").write_text(json.dumps(data))
    out = tmp_path / "out.json"
    result = run(str(folder), "--out", str(out))
    assert_failed_without_writing(result, folder, "safety_eval.json", "'harmbench'", "'micro ASR (lower)'")
    assert not out.exists()


def test_bad_variant_fails_and_writes_nothing(folder):
    result = run(str(folder), "--variant", "gsm8k_cot=exact_match")
    assert_failed_without_writing(result, folder, "variant of task gsm8k_cot", "exact_match,flexible-extract")
    assert_failed_without_writing(run(str(folder), "--variant", "gsm8k_cot"), folder, "TASK=VARIANT")


def test_missing_or_empty_folder(tmp_path):
    assert_failed_without_writing(run(str(tmp_path)), tmp_path, "holds no harness result file")
    result = run(str(tmp_path / "nope"))
    assert result.exit_code != 0 and "is not a directory" in result.output
    assert not (tmp_path / "nope").exists()
