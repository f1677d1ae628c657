"""MergeBench's SFT datasets and validation sets read offline from a real Hugging Face cache built here."""

from __future__ import annotations

import json

import pytest
from hubcache import AYA, DART, MAGICODER, write_dataset, write_sft_datasets

from mergebench.catalog.domains import DOMAIN_NAMES
from mergebench.errors import MergeBenchError
from mergebench.finetune.recipe import Recipe
from mergebench.finetune.sources import load_domain, load_training_rows
from mergebench.hubdata import HubDataset, choose, open_dataset
from mergebench.merging.datapass.samples import load_samples


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    for var in ("HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return home


def pairs(rows):
    return sorted((r["prompt"], r["response"]) for r in rows)


def test_every_domain_maps_its_own_columns(hf_home):
    write_sft_datasets(hf_home)
    got = {d: load_domain(d, Recipe()) for d in DOMAIN_NAMES}
    assert pairs(got["instruction"][0]) == [("List three fruits in capitals.", "APPLE, PEAR, FIG"),
                                            ("Write a haiku about rain.", "Soft rain on the roof")]
    assert pairs(got["math"][0]) == sorted((r["query"], r["response"]) for r in DART[:6])
    assert pairs(got["coding"][0]) == sorted((r["instruction"], r["response"]) for r in MAGICODER)
    assert pairs(got["multilingual"][0]) == sorted((r["inputs"], r["targets"]) for r in AYA)
    # WildGuardMix: the prompt-only row has no response; the harmful compliance is not learned from.
    assert pairs(got["safety"][0]) == [("How do I bake bread?", "Mix flour, water and yeast."),
                                       ("How do I pick a lock to break in?", "I can't help with that.")]
    assert all(set(r) == {"prompt", "response"} for rows, _ in got.values() for r in rows)
    info = got["safety"][1]
    assert {k: info[k] for k in ("repo", "config", "split", "rows", "incomplete", "filtered", "kept")} == {
        "repo": "allenai/wildguardmix", "config": "wildguardtrain", "split": "train", "rows": 4,
        "incomplete": 1, "filtered": 1, "kept": 2}
    assert len(info["revision"]) == 40  # the snapshot's commit, for the manifest
    assert (got["instruction"][1]["incomplete"], got["math"][1]["incomplete"]) == (1, 1)


def test_recipe_settings_choose_subsets(hf_home):
    write_sft_datasets(hf_home)
    safety, info = load_domain("safety", Recipe(safety_responses="all"))
    assert len(safety) == 3 and info["filtered"] == 0
    aya, info = load_domain("multilingual", Recipe(aya_languages="French, German"))
    assert pairs(aya) == [("Quelle est la capitale de la France ?", "Paris."),
                          ("Wie heißt die Hauptstadt von Deutschland?", "Berlin.")] and info["filtered"] == 1
    write_dataset(hf_home, "hkust-nlp/dart-math-uniform", {"data/train-00000-of-00001.parquet": DART[:2]})
    uniform, info = load_domain("math", Recipe(math_subset="dart-math-uniform"))
    assert len(uniform) == 2 and info["repo"] == "hkust-nlp/dart-math-uniform"
    with pytest.raises(MergeBenchError, match="math_subset='dart-math-easy': expected one of dart-math-hard"):
        Recipe(math_subset="dart-math-easy")


def test_selection_is_deterministic_and_nested(hf_home):
    write_sft_datasets(hf_home)
    usable = [{"prompt": r["query"], "response": r["response"]} for r in DART[:6]]
    three, info = load_domain("math", Recipe(max_samples=3, data_seed=7))
    assert three == [usable[i] for i in choose(6, 3, 7)] and info["kept"] == 3
    assert load_domain("math", Recipe(max_samples=3, data_seed=7))[0] == three
    assert load_domain("math", Recipe(max_samples=2, data_seed=7))[0] == three[:2]
    assert load_domain("math", Recipe(max_samples=3, data_seed=8))[0] != three
    assert pairs(load_domain("math", Recipe(max_samples=100))[0]) == pairs(usable)
    assert choose(5, None, 0) == choose(5, 9, 0) and sorted(choose(5, None, 0)) == [0, 1, 2, 3, 4]


def test_multitask_is_the_union_in_domain_order(hf_home):
    write_sft_datasets(hf_home)
    rows, infos = load_training_rows("multitask", Recipe())
    assert [i["domain"] for i in infos] == list(DOMAIN_NAMES)
    assert rows == [r for d in DOMAIN_NAMES for r in load_domain(d, Recipe())[0]]


def test_missing_dataset_names_it_and_how_to_fetch(hf_home):
    for domain, recipe, text in [
        ("safety", Recipe(), "safety training set allenai/wildguardmix (config wildguardtrain, split train) is not "
                             "in the Hugging Face cache"),
        ("math", Recipe(math_subset="dart-math-uniform"), "hkust-nlp/dart-math-uniform (split train)"),
    ]:
        with pytest.raises(MergeBenchError) as e:
            load_domain(domain, recipe)
        msg = str(e.value)
        assert "\n" not in msg and text in msg
        repo = text.split(" (")[0].split()[-1]
        assert f"`hf download {repo} --repo-type dataset`" in msg
        assert ("HF_TOKEN" in msg) == (domain == "safety")  # WildGuardMix is gated


def test_wrong_layout_is_a_one_line_error(hf_home):
    write_dataset(hf_home, "allenai/wildguardmix", {"train/wildguard_train.parquet": [{"prompt": "p", "response": "r"}]})
    with pytest.raises(MergeBenchError, match=r"wildguardmix \(config wildguardtrain, split train\): BuilderConfig "
                                              r"'wildguardtrain' not found. Available: \['default'\]"):
        load_domain("safety", Recipe())
    write_dataset(hf_home, "hkust-nlp/dart-math-hard", {"data/train-00000-of-00001.parquet": [{"question": "q",
                                                                                             "answer": "a"}]})
    with pytest.raises(MergeBenchError, match=r"has columns \['answer', 'question'\]; the math loader needs query, "
                                              r"response"):
        load_domain("math", Recipe())


def test_validation_sets_from_a_hub_snapshot(hf_home):
    rows = [{"query": f"q{i}", "response": f"r{i}"} for i in range(5)]
    write_dataset(hf_home, "MergeBench/math_val", {"data/train-00000-of-00001.parquet": rows})
    got = load_samples("math", 3, seed=1)
    assert [s.response for s in got] == [rows[i]["response"] for i in choose(5, 3, 1)]
    assert got[0].prompt.endswith("### Response:\n") and "q" in got[0].prompt


def test_validation_sets_from_the_prepared_datasets_cache(hf_home, tmp_path):
    """What an earlier online load_dataset("MergeBench/coding_val") left in HF_DATASETS_CACHE."""
    import datasets

    src = tmp_path / "coding_val"
    (src / "data").mkdir(parents=True)
    (src / "data" / "train.jsonl").write_text("".join(json.dumps({"instruction": f"i{i}", "response": f"c{i}"}) + "\n"
                                                      for i in range(4)))
    cache = hf_home / "datasets"
    datasets.load_dataset(str(src), split="train", cache_dir=str(cache))
    (cache / "coding_val").rename(cache / "MergeBench___coding_val")  # the layout a hub load prepares
    assert sorted(s.response for s in load_samples("coding", 10)) == ["c0", "c1", "c2", "c3"]
    ds, revision = open_dataset(HubDataset("MergeBench/coding_val"))
    assert len(ds) == 4 and revision is None
    with pytest.raises(MergeBenchError, match=r"validation set MergeBench/safety_val \(split train\) is not in the "
                                              r"Hugging Face cache .*`hf download MergeBench/safety_val --repo-type "
                                              r"dataset`"):
        load_samples("safety", 3)
