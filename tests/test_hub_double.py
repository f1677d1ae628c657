"""The hub double (mergebench/rehearsal/hub_double.py): a real HTTP server on 127.0.0.1 that the real
huggingface_hub, datasets and lm-eval talk to, and the fetch contract it lets us test: a dataset prepared
online by a harness's own `datasets` is found again with the hub offline; one never prepared is a
one-line error naming it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mergebench.errors import MergeBenchError
from mergebench.evaluation.adapters.execute import missing_dataset
from mergebench.evaluation.adapters.lmeval import TASK_DATASETS, fetch_nltk_package
from mergebench.rehearsal.hub_double import HubDouble
from mergebench.rehearsal.standins import write_dataset, write_eval_datasets, write_nltk


@pytest.fixture()
def hub(tmp_path):
    root = tmp_path / "hub"
    model = root / "models" / "org" / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "weights.bin").write_bytes(bytes(range(256)) * 4000)
    write_dataset(root, "org/rows", {"main": {"train": [{"q": "a", "n": 1}, {"q": "b", "n": 2}], "test": [{"q": "c", "n": 3}]}})
    write_dataset(root, "org/closed", {None: {"train": [{"q": "secret"}]}}, gated=True)
    write_nltk(root)
    with HubDouble(root) as double:
        yield double


def _python(code: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def _env(tmp_path, hub, offline=False) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update({"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")})
    if offline:
        env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    return env


def test_snapshot_download_gets_every_file_byte_for_byte(hub, tmp_path):
    run = _python("""
        from huggingface_hub import snapshot_download
        print(snapshot_download("org/tiny"))
    """, _env(tmp_path, hub), tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    snap = Path(run.stdout.strip())
    source = hub.root / "models" / "org" / "tiny"
    assert sorted(p.name for p in snap.iterdir()) == ["config.json", "weights.bin"]
    assert all((snap / n).read_bytes() == (source / n).read_bytes() for n in ("config.json", "weights.bin"))
    assert snap.name == hub.repo("models", "org/tiny").sha  # the revision the hub reported


def test_a_gated_repository_needs_the_token(hub, tmp_path):
    code = """
        import sys
        from huggingface_hub import snapshot_download
        try:
            snapshot_download("org/closed", repo_type="dataset", token=sys.argv[1] if len(sys.argv) > 1 else None)
            print("ok")
        except Exception as e:
            print(type(e).__name__)
    """
    env = _env(tmp_path, hub)
    without = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True)
    with_token = subprocess.run([sys.executable, "-c", textwrap.dedent(code), hub.token], env=env,
                                capture_output=True, text=True)
    assert without.stdout.strip() == "GatedRepoError" and with_token.stdout.strip() == "ok"


def test_a_dataset_prepared_online_is_read_offline_and_an_unprepared_one_is_named(hub, tmp_path):
    online = _python("""
        import datasets
        print(datasets.load_dataset("org/rows", "main", split="test")[0]["q"])
    """, _env(tmp_path, hub), tmp_path)
    assert online.returncode == 0 and online.stdout.strip().endswith("c"), online.stderr[-2000:]
    offline = _python("""
        import datasets
        print(len(datasets.load_dataset("org/rows", "main", split="train")))
    """, _env(tmp_path, hub, offline=True), tmp_path)
    assert offline.returncode == 0 and offline.stdout.strip().endswith("2"), offline.stderr[-2000:]
    never = _python("""
        import datasets
        datasets.load_dataset("org/closed")
    """, _env(tmp_path, hub, offline=True), tmp_path)
    log = tmp_path / "harness.log"
    log.write_text(never.stdout + never.stderr)
    assert never.returncode != 0 and missing_dataset(log) == "org/closed"


def test_nltk_punkt_tab_comes_from_the_index_and_splits_sentences(hub, tmp_path):
    target = fetch_nltk_package(f"{hub.url}/nltk/index.xml", "punkt_tab", tmp_path / "nltk_data")
    assert (target / "english" / "abbrev_types.txt").is_file()
    run = _python("""
        import nltk
        print(len(nltk.tokenize.PunktTokenizer().tokenize("Dr. Smith came. It rained. The end.")))
    """, {**_env(tmp_path, hub), "NLTK_DATA": str(tmp_path / "nltk_data")}, tmp_path)
    assert run.stdout.strip() == "3", run.stderr[-2000:]
    with pytest.raises(MergeBenchError, match=r"fetch nltk wordnet: .*index.xml lists no package 'wordnet'"):
        fetch_nltk_package(f"{hub.url}/nltk/index.xml", "wordnet", tmp_path / "other")


def test_every_request_the_clients_made_was_answered_or_is_an_optional_probe(hub, tmp_path):
    _python("""
        import datasets
        from huggingface_hub import snapshot_download
        snapshot_download("org/tiny")
        datasets.load_dataset("org/rows", "main")
    """, _env(tmp_path, hub), tmp_path)
    optional = ("/api/agent-harnesses", ".py", ".huggingface.yaml", "dataset_infos.json")
    assert hub.requests and [m for m in hub.misses if not m.endswith(optional)] == []


def test_the_stand_in_datasets_are_the_ones_lm_eval_s_tasks_name(tmp_path):
    """TASK_DATASETS (what fetch/lmeval prepares) against the installed lm-eval's own task configs, and the
    stand-in repositories cover each of them."""
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    index = TaskManager().task_index
    for task, (repo, config) in TASK_DATASETS.items():
        cfg = load_yaml(index[task].yaml_path, resolve_func=False)  # its includes resolved, as lm-eval reads it
        assert (cfg["dataset_path"], cfg.get("dataset_name")) == (repo, config), task
    served = write_eval_datasets(tmp_path)
    assert {repo for repo, _ in TASK_DATASETS.values()} <= set(served)
