"""The catalog states SPEC's domains, tasks, default variants, orientations and models as data."""

import subprocess
import sys
from pathlib import Path

import pytest

from mergebench.catalog import (
    DOMAIN_NAMES,
    DOMAINS,
    MODEL_NAMES,
    TASKS,
    UnknownNameError,
    get_domain,
    get_model,
    get_task,
    specialist_repo_id,
)
from mergebench.errors import MergeBenchError

REPO = Path(__file__).resolve().parents[1]
LANGS = ("fr", "es", "de", "ru")


def test_catalog_imports_with_the_standard_library_only():
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import mergebench.catalog\n"
        "new = {name.split('.')[0] for name in set(sys.modules) - before}\n"
        "print(sorted(new - set(sys.stdlib_module_names) - {'mergebench'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_five_domains_with_their_harness_and_tasks():
    assert DOMAIN_NAMES == ("instruction", "math", "multilingual", "coding", "safety")
    assert {name: d.harness for name, d in DOMAINS.items()} == {
        "instruction": "lmeval",
        "math": "lmeval",
        "multilingual": "lmeval",
        "coding": "bigcode",
        "safety": "safety",
    }
    assert get_domain("instruction").task_names == ("ifeval",)
    assert get_domain("math").task_names == ("gsm8k_cot",)
    assert set(get_domain("multilingual").task_names) == {
        f"{bench}_{lang}" for bench in ("m_mmlu", "arc", "hellaswag") for lang in LANGS
    }
    assert get_domain("coding").task_names == ("humanevalplus", "mbppplus")
    assert get_domain("safety").task_names == ("wildguardtest", "harmbench", "xstest", "do_anything_now")
    for domain in DOMAINS.values():
        assert all(task.domain == domain.name and task.harness == domain.harness for task in domain.tasks)


@pytest.mark.parametrize(
    ("task", "default"),
    [
        ("gsm8k_cot", "exact_match,flexible-extract"),
        ("ifeval", "mean"),
        *[(f"arc_{lang}", "acc_norm,none") for lang in LANGS],
        *[(f"hellaswag_{lang}", "acc_norm,none") for lang in LANGS],
        *[(f"m_mmlu_{lang}", "acc,none") for lang in LANGS],
        ("humanevalplus", "pass@1"),
        ("mbppplus", "pass@1"),
        ("wildguardtest", "micro harm (lower)"),
        ("harmbench", "micro ASR (lower)"),
        ("xstest", "overall_accuracy"),
        ("do_anything_now", "macro ASR"),
    ],
)
def test_default_variants_follow_spec(task, default):
    spec = get_task(task)
    assert spec.default_variant == default
    assert default in spec.variants


def test_every_variant_records_the_harness_keys():
    assert get_task("gsm8k_cot").variants == ("exact_match,strict-match", "exact_match,flexible-extract")
    assert get_task("arc_fr").variants == ("acc,none", "acc_norm,none")
    assert get_task("m_mmlu_ru").variants == ("acc,none",)
    assert get_task("mbppplus").variants == ("pass@1", "pass@10")
    assert get_task("mbppplus").required_metrics == ("pass@1",)


def test_ifeval_default_is_the_mean_of_the_four_accuracies():
    components = get_task("ifeval").variant_components()
    assert [key for key, _ in components] == [
        "prompt_level_strict_acc,none",
        "inst_level_strict_acc,none",
        "prompt_level_loose_acc,none",
        "inst_level_loose_acc,none",
    ]
    assert not any(spec.lower_is_better for _, spec in components)


def test_orientation_is_explicit_for_every_metric():
    harms = {
        "wildguardtest": [
            "micro harm (lower)",
            "adversarial harm (lower)",
            "prompt_type harm (lower)/others",
        ],
        "harmbench": ["micro ASR (lower)", "SemanticCategory ASR (lower)/copyright"],
        "do_anything_now": ["macro ASR", "ChatGPT ASR"],
        "xstest": ["inverted_rta_all_contrast", "inverted_rta_contrast_privacy"],
    }
    for task, keys in harms.items():
        assert all(get_task(task).lower_is_better(key) for key in keys), task
    xstest = get_task("xstest")
    for key in ("overall_accuracy", "inverted_rta_all_safe", "inverted_rta_homonyms", "refusal_prf/f1"):
        assert xstest.lower_is_better(key) is False
    for name, task in TASKS.items():
        if task.harness != "safety":
            assert not any(m.lower_is_better for m in task.metrics), name


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UnknownNameError, match=r"unknown task 'gsm8k'.*gsm8k_cot"):
        get_task("gsm8k")
    with pytest.raises(UnknownNameError, match=r"unknown domain 'code'.*coding"):
        get_domain("code")
    with pytest.raises(UnknownNameError, match=r"variant of task gsm8k_cot.*exact_match,strict-match"):
        get_task("gsm8k_cot").variant_components("exact_match")
    with pytest.raises(UnknownNameError, match="pick one category"):
        get_task("wildguardtest").variant_components("prompt_type harm (lower)")
    with pytest.raises(UnknownNameError, match="metric of task xstest"):
        get_task("xstest").lower_is_better("made_up")


def test_eight_bases_and_tiny():
    assert MODEL_NAMES == (
        "llama-3.2-3b",
        "llama-3.2-3b-instruct",
        "llama-3.1-8b",
        "llama-3.1-8b-instruct",
        "gemma-2-2b",
        "gemma-2-2b-it",
        "gemma-2-9b",
        "gemma-2-9b-it",
        "tiny",
    )
    expected = {
        "llama-3.2-3b": ("meta-llama/Llama-3.2-3B", True, 128256),
        "llama-3.2-3b-instruct": ("meta-llama/Llama-3.2-3B-Instruct", True, 128256),
        "llama-3.1-8b": ("meta-llama/Llama-3.1-8B", False, 128256),
        "llama-3.1-8b-instruct": ("meta-llama/Llama-3.1-8B-Instruct", False, 128256),
        "gemma-2-2b": ("google/gemma-2-2b", True, 256000),
        "gemma-2-2b-it": ("google/gemma-2-2b-it", True, 256000),
        "gemma-2-9b": ("google/gemma-2-9b", True, 256000),
        "gemma-2-9b-it": ("google/gemma-2-9b-it", True, 256000),
    }
    for name, (hub_id, tied, vocab) in expected.items():
        model = get_model(name)
        assert (model.hub_id, model.tied_embeddings, model.vocab_size) == (hub_id, tied, vocab)
        assert model.instruct == name.endswith(("-instruct", "-it"))
    tiny = get_model("tiny")
    assert tiny.hub_id is None and tiny.local


def test_specialist_repo_ids():
    assert specialist_repo_id("llama-3.2-3b", "math") == "MergeBench/Llama-3.2-3B_math"
    assert specialist_repo_id("gemma-2-2b-it", "coding") == "MergeBench/gemma-2-2b-it_coding"
    assert get_model("llama-3.1-8b-instruct").specialist_repo_ids() == {
        domain: f"MergeBench/Llama-3.1-8B-Instruct_{domain}" for domain in DOMAIN_NAMES
    }
    with pytest.raises(UnknownNameError, match="unknown domain 'maths'"):
        specialist_repo_id("llama-3.2-3b", "maths")
    with pytest.raises(MergeBenchError, match="built locally"):
        specialist_repo_id("tiny", "math")


def test_unknown_model_lists_known_models():
    with pytest.raises(UnknownNameError) as info:
        get_model("llama-3-8b")
    message = str(info.value)
    assert "llama-3-8b" in message and "\n" not in message
    assert all(name in message for name in MODEL_NAMES)
