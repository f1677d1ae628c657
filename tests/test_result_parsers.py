"""Parsers read MergeBench's published harness outputs exactly, and reject broken ones loudly."""

import json
import shutil
from pathlib import Path

import pytest

from mergebench.catalog import TASKS, UnknownNameError
from mergebench.evaluation.parsers import (
    ResultParseError,
    import_results,
    parse_bigcode,
    parse_lmeval,
    parse_safety,
)
from mergebench.evaluation.records import RecordFormatError, ResultRecord
from mergebench.evaluation.scores import ScoreError, domain_score, domain_scores, summarize, task_score

PUBLISHED = Path(__file__).parent / "fixtures" / "published-results"
SMALL = PUBLISHED / "Llama-3.2-3B-RegMeanPlusPlus"
LARGE = PUBLISHED / "Llama-3.1-8B-RegMeanPlusPlus"


def raw(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


def copy_folder(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    return target


# --- the published figures, exactly -------------------------------------------------------------------


def test_lmeval_published_figures():
    record = parse_lmeval(SMALL / "lm_eval.json")
    gsm8k = record.metrics["gsm8k_cot"]
    assert gsm8k["exact_match,flexible-extract"] == 0.400303260045489
    assert round(gsm8k["exact_match,flexible-extract"], 4) == 0.4003
    assert gsm8k["exact_match,strict-match"] == 0.3510235026535254
    assert record.metrics["ifeval"]["inst_level_loose_acc,none"] == 0.11151079136690648
    assert record.metrics["arc_de"] == {"acc,none": 0.31137724550898205, "acc_norm,none": 0.358426005132592}
    assert record.metrics["hendrycks_math"] == {"exact_match,none": 0.0172}  # kept though not scored

    large = parse_lmeval(LARGE / "lm_eval.json")
    assert large.metrics["gsm8k_cot"]["exact_match,flexible-extract"] == 0.733131159969674
    assert large.metrics["m_mmlu_de"]["acc,none"] == 0.5123698898778096


def test_lmeval_keeps_stderr_apart_and_provenance():
    record = parse_lmeval(SMALL / "lm_eval.json")
    assert all("stderr" not in key for values in record.metrics.values() for key in values)
    assert "alias" not in record.metrics["ifeval"]
    assert record.stderr["gsm8k_cot"]["exact_match,flexible-extract"] == 0.013495926436566438
    # lm-eval writes "N/A" for instruction-level stderr; no number is invented for it.
    assert set(record.stderr["ifeval"]) == {"prompt_level_strict_acc,none", "prompt_level_loose_acc,none"}
    assert (record.harness, record.harness_version, record.harness_commit, record.backend) == (
        "lmeval",
        "0.4.9.1",
        "f91dd3c",
        "vllm",
    )
    assert record.model == "Llama-3.2-3B-RegMeanPlusPlus"
    assert record.sources == [str(SMALL / "lm_eval.json")]
    assert record.config["random_seed"] == 0 and record.config["fewshot_seed"] == 1234
    assert record.config["n_shot"]["gsm8k_cot"] == 8 and record.config["n_shot"]["ifeval"] == 0
    assert record.config["task_versions"]["ifeval"] == 4.0
    assert record.config["transformers_version"] == "4.57.1"
    assert record.config["model_path"].startswith("merged_models/Llama-3.2-3B_merged/RegMeanPlusPlus")
    assert record.config["groups"] == {
        "hendrycks_math": raw(SMALL, "lm_eval.json")["group_subtasks"]["hendrycks_math"]
    }


@pytest.mark.parametrize("folder", [SMALL, LARGE], ids=["3B", "8B"])
def test_lmeval_every_number_matches_the_file(folder):
    record = parse_lmeval(folder / "lm_eval.json")
    results = raw(folder, "lm_eval.json")["results"]
    assert set(record.metrics) == set(results)
    for task, entry in results.items():
        expected = {k: v for k, v in entry.items() if k != "alias" and "_stderr," not in k}
        assert record.metrics[task] == expected, task


def test_bigcode_published_figures():
    record = parse_bigcode(SMALL / "code_eval.json")
    assert record.metrics == {
        "humanevalplus": {"pass@1": 0.31036585365853653, "pass@10": 0.4634146341463415},
        "mbppplus": {"pass@1": 0.4304232804232804, "pass@10": 0.5582010582010583},
    }
    assert round(record.metrics["humanevalplus"]["pass@1"], 4) == 0.3104
    assert record.harness == "bigcode" and record.backend == "hf"
    assert (
        record.config["temperature"] == 0.2
        and record.config["n_samples"] == 10
        and record.config["seed"] == 0
    )
    assert record.config["max_length_generation"] == 512 and record.config["precision"] == "bf16"

    large = parse_bigcode(LARGE / "code_eval.json")
    assert large.metrics["humanevalplus"]["pass@1"] == 0.47317073170731705
    assert large.metrics["mbppplus"]["pass@1"] == 0.5732804232804233


def test_safety_published_figures():
    record = parse_safety(SMALL / "safety_eval.json")
    assert record.metrics["wildguardtest"]["micro harm (lower)"] == 0.650200267022697
    assert round(record.metrics["wildguardtest"]["micro harm (lower)"], 4) == 0.6502
    assert record.metrics["wildguardtest"]["prompt_type harm (lower)/cyberattack"] == 0.6875
    assert record.metrics["harmbench"]["micro ASR (lower)"] == 0.646875
    assert record.metrics["xstest"]["overall_accuracy"] == 0.4022222222222222
    assert record.metrics["xstest"]["refusal_prf/recall"] == 0.435
    assert record.metrics["do_anything_now"]["macro ASR"] == 0.5633333333333334
    assert (record.harness, record.harness_version, record.backend) == ("safety", None, None)

    large = parse_safety(LARGE / "safety_eval.json")
    assert large.metrics["wildguardtest"]["micro harm (lower)"] == 0.4753004005340454
    assert large.metrics["harmbench"]["micro ASR (lower)"] == 0.65625
    assert large.metrics["xstest"]["overall_accuracy"] == 0.5911111111111111
    assert large.metrics["do_anything_now"]["macro ASR"] == 0.6066666666666667


@pytest.mark.parametrize("folder", [SMALL, LARGE], ids=["3B", "8B"])
def test_every_recorded_metric_of_a_scored_task_has_a_known_orientation(folder):
    for record in import_results(folder):
        for task, values in record.metrics.items():
            if task in TASKS:
                for key in values:
                    TASKS[task].lower_is_better(key)  # raises for a key the catalog does not know


def test_import_results_finds_the_three_harnesses():
    records = import_results(LARGE)
    assert [r.harness for r in records] == ["lmeval", "bigcode", "safety"]
    assert {r.model for r in records} == {"Llama-3.1-8B-RegMeanPlusPlus"}
    assert {r.model for r in import_results(LARGE, model="regmean++ 8b")} == {"regmean++ 8b"}


def test_import_results_reads_lm_eval_output_path_layout(tmp_path):
    # `lm_eval --output_path DIR` writes DIR/<sanitized model>/results_<timestamp>.json
    run = tmp_path / "run" / "merged_models__x"
    run.mkdir(parents=True)
    shutil.copy(SMALL / "lm_eval.json", run / "results_2025-11-17T06-07-18.json")
    (records,) = import_results(tmp_path / "run")
    assert records.harness == "lmeval" and records.model == "run"
    assert records.metrics["gsm8k_cot"]["exact_match,flexible-extract"] == 0.400303260045489


def test_lmeval_hf_backend_with_dict_model_args(tmp_path):
    data = {
        "results": {
            "gsm8k_cot": {
                "alias": "gsm8k_cot",
                "exact_match,strict-match": 0.5,
                "exact_match,flexible-extract": 0.25,
            }
        },
        "config": {"model": "hf", "model_args": {"pretrained": "/models/merged", "dtype": "bfloat16"}},
        "lm_eval_version": "0.4.11",
    }
    path = tmp_path / "m" / "results_x.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    record = parse_lmeval(path)
    assert record.backend == "hf" and record.config["model_path"] == "/models/merged"
    assert record.harness_version == "0.4.11" and record.harness_commit is None
    assert record.model == "m"


def test_record_json_round_trip():
    for record in import_results(SMALL):
        again = ResultRecord.from_dict(json.loads(json.dumps(record.to_dict())))
        assert again == record


def test_record_from_dict_rejects_other_shapes():
    good = parse_bigcode(SMALL / "code_eval.json").to_dict()
    with pytest.raises(RecordFormatError, match="schema"):
        ResultRecord.from_dict({**good, "schema": 99})
    with pytest.raises(RecordFormatError, match="not a number"):
        ResultRecord.from_dict({**good, "metrics": {"mbppplus": {"pass@1": "high"}}})
    with pytest.raises(RecordFormatError, match="'model'"):
        ResultRecord.from_dict({k: v for k, v in good.items() if k != "model"})


# --- broken raw files ---------------------------------------------------------------------------------


def assert_one_line_naming(error: ResultParseError, path: Path, *fragments: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("name", "parser"),
    [("lm_eval.json", parse_lmeval), ("code_eval.json", parse_bigcode), ("safety_eval.json", parse_safety)],
)
def test_truncated_file(tmp_path, name, parser):
    text = (SMALL / name).read_text()
    path = tmp_path / name
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ResultParseError) as info:
        parser(path)
    assert_one_line_naming(info.value, path, "not valid JSON")
    with pytest.raises(ResultParseError):
        import_results(tmp_path)


@pytest.mark.parametrize(
    ("name", "parser", "task", "metric"),
    [
        ("lm_eval.json", parse_lmeval, "gsm8k_cot", "exact_match,flexible-extract"),
        ("lm_eval.json", parse_lmeval, "ifeval", "inst_level_loose_acc,none"),
        ("lm_eval.json", parse_lmeval, "arc_ru", "acc_norm,none"),
        ("code_eval.json", parse_bigcode, "humanevalplus", "pass@1"),
        ("safety_eval.json", parse_safety, "wildguardtest", "micro harm (lower)"),
        ("safety_eval.json", parse_safety, "xstest", "overall_accuracy"),
    ],
)
def test_file_with_a_metric_removed(tmp_path, name, parser, task, metric):
    data = raw(LARGE, name)
    entries = data["results"] if name == "lm_eval.json" else data
    del entries[task][metric]
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2))
    with pytest.raises(ResultParseError) as info:
        parser(path)
    assert_one_line_naming(info.value, path, repr(task), repr(metric), "lacks metric")


def test_non_numeric_required_metric(tmp_path):
    data = raw(SMALL, "lm_eval.json")
    data["results"]["gsm8k_cot"]["exact_match,flexible-extract"] = "N/A"
    path = tmp_path / "lm_eval.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultParseError) as info:
        parse_lmeval(path)
    assert_one_line_naming(info.value, path, "'exact_match,flexible-extract'", "not a finite number", "'N/A'")


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("lm_eval.json", {"config": {}}, "has no 'results' section"),
        ("lm_eval.json", {"results": {}}, "reported no task"),
        ("lm_eval.json", {"results": {"gsm8k_cot": 0.4}}, "expected an object"),
        ("lm_eval.json", [1, 2], "top level is a JSON list"),
        ("code_eval.json", {"config": {"n_samples": 10}}, "reports no task"),
        ("code_eval.json", {"humanevalplus": [0.3]}, "expected an object"),
        ("safety_eval.json", {}, "reports no task"),
    ],
)
def test_malformed_files(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_text(json.dumps(content))
    parser = {
        "lm_eval.json": parse_lmeval,
        "code_eval.json": parse_bigcode,
        "safety_eval.json": parse_safety,
    }[name]
    with pytest.raises(ResultParseError) as info:
        parser(path)
    assert_one_line_naming(info.value, path, problem)


def test_folder_without_results(tmp_path):
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(ResultParseError, match="holds no harness result file"):
        import_results(tmp_path)
    with pytest.raises(ResultParseError, match="is not a directory"):
        import_results(tmp_path / "missing")


# --- domain scores ------------------------------------------------------------------------------------


def test_domain_scores_by_hand_for_llama_3_2_3b():
    scores = domain_scores(import_results(SMALL))
    instruction = (0.06839186691312385 + 0.09712230215827339 + 0.08687615526802218 + 0.11151079136690648) / 4
    math = 0.400303260045489
    multilingual = (
        0.4712626338814301
        + 0.4887505624718764
        + 0.47979527919945003
        + 0.4423771815176443  # m_mmlu acc
        + 0.358426005132592
        + 0.4008547008547009
        + 0.40461933276304535
        + 0.369546621043627  # arc acc_norm
        + 0.5470751494449189
        + 0.6067847237038617
        + 0.5938102377382737
        + 0.5282571182053495  # hellaswag acc_norm
    ) / 12
    coding = (0.31036585365853653 + 0.4304232804232804) / 2
    safety = ((1 - 0.650200267022697) + (1 - 0.646875) + 0.4022222222222222 + (1 - 0.5633333333333334)) / 4
    expected = {
        "instruction": instruction,
        "math": math,
        "multilingual": multilingual,
        "coding": coding,
        "safety": safety,
    }
    assert scores == pytest.approx(expected, abs=1e-12)
    assert round(scores["safety"], 4) == 0.3855


def test_variant_overrides():
    records = import_results(SMALL)
    assert domain_score(records, "math", {"gsm8k_cot": "exact_match,strict-match"}) == 0.3510235026535254
    assert (
        domain_score(records, "instruction", {"ifeval": "prompt_level_strict_acc,none"})
        == 0.06839186691312385
    )
    assert task_score(records, "wildguardtest", "prompt_type harm (lower)/cyberattack") == pytest.approx(
        1 - 0.6875
    )
    assert task_score(records, "xstest", "inverted_rta_all_contrast") == pytest.approx(1 - 0.565)
    with pytest.raises(UnknownNameError, match="variant of task gsm8k_cot"):
        domain_score(records, "math", {"gsm8k_cot": "exact_match"})
    with pytest.raises(UnknownNameError, match="unknown task 'gsm8k'"):
        domain_scores(records, {"gsm8k": "exact_match,strict-match"})


def test_missing_metric_or_task_is_a_clear_score_error():
    records = import_results(SMALL)
    del records[0].metrics["arc_fr"]["acc_norm,none"]
    with pytest.raises(ScoreError, match=r"task 'arc_fr' has no metric 'acc_norm,none' in .*lm_eval\.json"):
        domain_score(records, "multilingual")
    lmeval_only = [r for r in import_results(SMALL) if r.harness == "lmeval"]
    with pytest.raises(ScoreError, match="no result for task 'humanevalplus'"):
        domain_scores(lmeval_only)
    summary = summarize(lmeval_only)
    assert set(summary.domains) == {"instruction", "math", "multilingual"}
    assert set(summary.incomplete) == {"coding", "safety"}
    assert "humanevalplus" in summary.incomplete["coding"]


def test_a_task_reported_twice_is_ambiguous():
    records = import_results(SMALL) + [parse_lmeval(LARGE / "lm_eval.json")]
    with pytest.raises(ScoreError, match="gsm8k_cot' is reported more than once"):
        domain_score(records, "math")
