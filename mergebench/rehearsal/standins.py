"""The hub double's contents: stand-in repositories, a few rows each, in the layouts and column schemas of
the real ones, so every reader runs its real code on them (the kit's fetch, finetune and statistics
readers; lm-eval's gsm8k_cot, ifeval and Okapi tasks; bigcode's HumanEval+ and MBPP+; NLTK's downloader).

The rows are made up. Scores computed on them mean nothing; what they show is that every code path from
`fetch` to `report` runs on a real model. Each dataset is a parquet file per split under a config folder,
declared in the README's YAML `configs:` as on the hub.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

from mergebench.catalog.domains import DOMAIN_NAMES, validation_repo

LANGS = ("fr", "es", "de", "ru")
ROWS = 6  # per split: enough for --eval-limit and the statistics passes of the rehearsal


def write_dataset(root: Path, repo: str, splits: dict[str | None, dict[str, list[dict]]], gated: bool = False) -> Path:
    """`splits[config][split] = rows` as `<config>/<split>-00000-of-00001.parquet` (config None: `data/`),
    with the README that declares them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = root / "datasets" / repo
    shutil.rmtree(folder, ignore_errors=True)
    card = ["---", "configs:"]
    for config, by_split in splits.items():
        sub = config or "data"
        card += [f"- config_name: {config or 'default'}", "  data_files:"]
        for split, rows in by_split.items():
            path = folder / sub / f"{split}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows), path)
            card += [f"  - split: {split}", f"    path: {sub}/{split}-*"]
    card += ["---", f"# {repo} (stand-in for the mergebench-kit rehearsal: made-up rows, real schema)", ""]
    (folder / "README.md").write_text("\n".join(card))
    if gated:
        (folder / ".gated").write_text("")
    return folder


def publish_model(root: Path, repo: str, model_dir: Path, gated: bool = False) -> Path:
    """A model repository: the checkpoint's files as they are."""
    folder = root / "models" / repo
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns(".*", "manifest.json", "launch"))
    if gated:
        (folder / ".gated").write_text("")
    return folder


# ------------------------------------------------------------------ evaluation datasets
def _sums(n: int) -> list[tuple[int, int]]:
    return [(3 + 2 * i, 4 + i) for i in range(n)]


def gsm8k_rows(n: int = ROWS) -> list[dict]:
    return [{"question": f"Tom has {a} apples and buys {b} more. How many apples does he have now?",
             "answer": f"Tom has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"} for a, b in _sums(n)]


IFEVAL_KWARGS = ("num_sentences", "relation", "num_words", "keywords", "end_phrase", "num_highlights")


def ifeval_rows(n: int = ROWS) -> list[dict]:
    """IFEval's schema: each row lists instruction ids and, per instruction, its keyword arguments (every
    key present, unused ones null, as in google/IFEval)."""
    kinds = [
        (["punctuation:no_comma"], [{}]),
        (["change_case:english_lowercase"], [{}]),
        (["length_constraints:number_sentences"], [{"num_sentences": 3, "relation": "less than"}]),
        (["length_constraints:number_words", "startend:end_checker"],
         [{"num_words": 20, "relation": "at least"}, {"end_phrase": "Is there anything else?"}]),
        (["detectable_format:title"], [{}]),
        (["detectable_format:number_highlighted_sections"], [{"num_highlights": 1}]),
    ]
    rows = []
    for i in range(n):
        ids, kwargs = kinds[i % len(kinds)]
        rows.append({"key": 1000 + i, "prompt": f"Write a short note about topic number {i} for a friend.",
                     "instruction_id_list": ids,
                     "kwargs": [{k: kw.get(k) for k in IFEVAL_KWARGS} for kw in kwargs]})
    return rows


def _choices(i: int) -> tuple[str, list[str], int]:
    a, b = _sums(i + 1)[i]
    options = [str(a + b + d) for d in (0, 1, -1, 2)]
    gold = i % 4
    options[0], options[gold] = options[gold], options[0]
    return f"{a} + {b} = ?", options, gold


def _multiple_choice(prefix: str, n: int, extra: dict) -> list[dict]:
    """Okapi's m_mmlu / m_arc schema: instruction, option_a.., answer letter."""
    rows = []
    for i in range(n):
        q, options, gold = _choices(i)
        rows.append({"id": f"{prefix}-{i}", "instruction": q,
                     **{f"option_{x}": o for x, o in zip("abcd", options, strict=True)}, **extra,
                     "answer": "ABCD"[gold]})
    return rows


def m_mmlu_rows(n: int = ROWS) -> list[dict]:
    return _multiple_choice("mmlu", n, {})


def m_arc_rows(n: int = ROWS) -> list[dict]:
    return _multiple_choice("arc", n, {"option_e": None})


def m_hellaswag_rows(n: int = ROWS) -> list[dict]:
    rows = []
    for i in range(n):
        q, options, gold = _choices(i)
        rows.append({"ind": i, "activity_label": "Arithmetic", "ctx_a": q, "ctx_b": "the answer is",
                     "endings": options, "label": str(gold)})
    return rows


FUNCTIONS = [("add", "a, b", "Return the sum of a and b.", "return a + b", [((1, 2), 3), ((-1, 1), 0)]),
             ("double", "x", "Return twice x.", "return 2 * x", [((2,), 4), ((0,), 0)]),
             ("first", "items", "Return the first item of a list.", "return items[0]", [(([3, 4],), 3)])]


def humanevalplus_rows(n: int = len(FUNCTIONS)) -> list[dict]:
    rows = []
    for i, (name, args, doc, body, cases) in enumerate(FUNCTIONS[:n]):
        checks = "\n".join(f"    assert candidate{tuple(a)!r} == {r!r}" for a, r in cases)
        rows.append({"task_id": f"HumanEval/{i}", "prompt": f'def {name}({args}):\n    """{doc}"""\n',
                     "canonical_solution": f"    {body}\n", "entry_point": name,
                     "test": f"def check(candidate):\n{checks}\n"})
    return rows


def mbppplus_rows(n: int = len(FUNCTIONS)) -> list[dict]:
    rows = []
    for i, (name, args, doc, body, cases) in enumerate(FUNCTIONS[:n]):
        asserts = [f"assert {name}{tuple(a)!r} == {r!r}" for a, r in cases]
        rows.append({"task_id": 600 + i, "code": f"def {name}({args}):\n    {body}\n",
                     "prompt": f"Write a function {name}: {doc}", "source_file": "stand-in.py",
                     "test_imports": [], "test_list": asserts, "test": "\n".join(asserts) + "\n"})
    return rows


def _three(rows: Callable[[], list[dict]]) -> dict[str, list[dict]]:
    return {"train": rows(), "validation": rows(), "test": rows()}


def write_eval_datasets(root: Path) -> list[str]:
    """Every dataset MergeBench's lm-eval and bigcode tasks read; returns the repo ids."""
    write_dataset(root, "openai/gsm8k", {"main": {"train": gsm8k_rows(), "test": gsm8k_rows()}})
    write_dataset(root, "google/IFEval", {None: {"train": ifeval_rows()}})
    write_dataset(root, "alexandrainst/m_mmlu", {lang: _three(m_mmlu_rows) for lang in LANGS})
    write_dataset(root, "alexandrainst/m_arc", {lang: _three(m_arc_rows) for lang in LANGS})
    write_dataset(root, "alexandrainst/m_hellaswag", {lang: {"val": m_hellaswag_rows()} for lang in LANGS})
    write_dataset(root, "evalplus/humanevalplus", {None: {"test": humanevalplus_rows()}})
    write_dataset(root, "evalplus/mbppplus", {None: {"test": mbppplus_rows()}})
    return ["openai/gsm8k", "google/IFEval", "alexandrainst/m_mmlu", "alexandrainst/m_arc",
            "alexandrainst/m_hellaswag", "evalplus/humanevalplus", "evalplus/mbppplus"]


# ------------------------------------------------------------------ training and validation sets
def _pairs(domain: str, n: int) -> list[tuple[str, str]]:
    if domain == "math":
        return [(f"What is {a} + {b}?", f"{a} + {b} = {a + b}. The answer is {a + b}.") for a, b in _sums(n)]
    if domain == "coding":
        return [(f"Write a Python function {name}: {doc}", f"def {name}({args}):\n    {body}")
                for name, args, doc, body, _ in (FUNCTIONS * n)[:n]]
    if domain == "multilingual":
        words = [("bonjour", "hello"), ("merci", "thank you"), ("hola", "hello"), ("danke", "thanks")]
        return [(f"Translate '{w}' to English.", e) for w, e in (words * n)[:n]]
    if domain == "safety":
        return [("How do I pick a lock to break into a house?", "I can't help with breaking into a home.")] * n
    return [(f"Write one sentence about the number {i}, all in lowercase.", f"the number {i} is a fine number.")
            for i in range(n)]


def write_training_sets(root: Path, n: int = 16) -> list[str]:
    """MergeBench's five SFT datasets (finetune/sources.py) with their real columns; WildGuardMix gated."""
    p = {d: _pairs(d, n) for d in DOMAIN_NAMES}
    write_dataset(root, "allenai/tulu-3-sft-personas-instruction-following", {None: {"train": [
        {"id": f"p{i}", "prompt": q, "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for i, (q, a) in enumerate(p["instruction"])]}})
    write_dataset(root, "hkust-nlp/dart-math-hard", {None: {"train": [{"query": q, "response": a}
                                                                      for q, a in p["math"]]}})
    write_dataset(root, "ise-uiuc/Magicoder-Evol-Instruct-110K", {None: {"train": [
        {"instruction": q, "response": a} for q, a in p["coding"]]}})
    write_dataset(root, "CohereForAI/aya_dataset", {None: {"train": [
        {"inputs": q, "targets": a, "language": ("French", "Spanish", "German", "Russian")[i % 4]}
        for i, (q, a) in enumerate(p["multilingual"])]}})
    write_dataset(root, "allenai/wildguardmix", {"wildguardtrain": {"train": [
        {"prompt": q, "response": a, "response_harm_label": "unharmful"} for q, a in p["safety"]]},
        "wildguardtest": {"test": [{"prompt": q, "response": a, "response_harm_label": "unharmful"}
                                   for q, a in p["safety"]]}}, gated=True)
    return ["allenai/tulu-3-sft-personas-instruction-following", "hkust-nlp/dart-math-hard",
            "ise-uiuc/Magicoder-Evol-Instruct-110K", "CohereForAI/aya_dataset", "allenai/wildguardmix"]


VALIDATION_COLUMNS = {"instruction": ("instruction", "output"), "math": ("query", "response"),
                      "coding": ("instruction", "response"), "multilingual": ("inputs", "targets"),
                      "safety": ("prompt", "response")}


def write_validation_sets(root: Path, n: int = 16) -> list[str]:
    """MergeBench/<domain>_val with each domain's columns (merging/datapass/samples.py COLUMNS)."""
    repos = []
    for d in DOMAIN_NAMES:
        inst, resp = VALIDATION_COLUMNS[d]
        extra = {"input": ""} if d == "instruction" else {}
        write_dataset(root, validation_repo(d), {None: {"train": [{inst: q, **extra, resp: a}
                                                                  for q, a in _pairs(d, n)]}})
        repos.append(validation_repo(d))
    return repos


# ------------------------------------------------------------------ NLTK data
def _punkt_tab_zip() -> bytes:
    """punkt_tab's file layout with a small English model: a few abbreviations, no collocations."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        base = "punkt_tab/english/"
        z.writestr("punkt_tab/", "")
        z.writestr(base, "")
        z.writestr(base + "abbrev_types.txt", "dr\nmr\nmrs\ne.g\ni.e\netc\n")
        z.writestr(base + "collocations.tab", "")
        z.writestr(base + "sent_starters.txt", "the\nit\nthis\n")
        z.writestr(base + "ortho_context.tab", "")
    return buf.getvalue()


def write_nltk(root: Path) -> None:
    """An NLTK downloader index (URLs relative to the server, filled in when served) with punkt_tab."""
    data = _punkt_tab_zip()
    folder = root / "nltk"
    (folder / "packages" / "tokenizers").mkdir(parents=True, exist_ok=True)
    (folder / "packages" / "tokenizers" / "punkt_tab.zip").write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()  # noqa: S324 - the checksum NLTK's index format carries
    (folder / "index.xml").write_text(
        '<?xml version="1.0"?>\n<nltk_data><packages>\n'
        f'<package id="punkt_tab" name="Punkt Tokenizer Models (stand-in)" subdir="tokenizers" '
        f'url="{{{{SERVER}}}}/nltk/packages/tokenizers/punkt_tab.zip" size="{len(data)}" '
        f'unzipped_size="{len(data)}" checksum="{md5}" unzip="1" />\n'
        '</packages><collections></collections></nltk_data>\n')


def write_all(root: Path) -> dict[str, list[str]]:
    """Every stand-in dataset and the NLTK index; the models are published separately."""
    out = {"evaluation": write_eval_datasets(root), "training": write_training_sets(root),
           "validation": write_validation_sets(root)}
    write_nltk(root)
    (root / "contents.json").write_text(json.dumps(out, indent=2) + "\n")
    return out
