"""MergeBench's SFT datasets, read offline and mapped to the {"prompt", "response"} rows the trainer takes.

| domain | dataset (hub) | config, split | prompt ← | response ← | kept |
|---|---|---|---|---|---|
| instruction | allenai/tulu-3-sft-personas-instruction-following | train | first user turn of `messages` | the assistant turn after it | rows with both |
| math | hkust-nlp/dart-math-hard (`math_subset`) | train | `query` | `response` | all |
| coding | ise-uiuc/Magicoder-Evol-Instruct-110K | train | `instruction` | `response` | all |
| multilingual | CohereForAI/aya_dataset | train | `inputs` | `targets` | `language` in `aya_languages` (empty: all) |
| safety | allenai/wildguardmix (gated) | wildguardtrain, train | `prompt` | `response` | rows with a response; `safety_responses="unharmful"` also drops responses labelled harmful |

A row whose prompt or response is missing or blank is dropped (and counted). Then `max_samples` rows are
chosen with `mergebench.hubdata.choose(…, data_seed)`, the kit's one deterministic selection; the
multi-task baseline is the union of the five domains' selections, in the catalog's domain order.
The template is applied later, by the trainer (`recipe.template`), so the same rows serve any template.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mergebench.catalog.domains import DOMAIN_NAMES, get_domain
from mergebench.errors import MergeBenchError
from mergebench.finetune.recipe import Recipe
from mergebench.hubdata import HubDataset, choose, open_dataset

Pair = tuple[Any, Any]


def _columns(prompt: str, response: str) -> Callable[[dict], Pair]:
    return lambda row: (row[prompt], row[response])


def _first_exchange(row: dict) -> Pair:
    """Tulu-3's `messages`: the first user turn and the assistant turn that answers it."""
    turns = row["messages"] or []
    for i, turn in enumerate(turns):
        if turn.get("role") == "user":
            answer = next((t.get("content") for t in turns[i + 1:] if t.get("role") == "assistant"), None)
            return turn.get("content"), answer
    return None, None


@dataclass(frozen=True)
class Source:
    """Where a domain's training rows come from and how a row becomes (prompt, response)."""

    domain: str
    dataset: HubDataset
    #: Columns the mapping reads; a dataset without them is a one-line error, not a KeyError mid-way.
    columns: tuple[str, ...]
    pair: Callable[[dict], Pair]
    #: A further row filter from the recipe (None: keep every usable row).
    keep: Callable[[dict], bool] | None = None
    filter_columns: tuple[str, ...] = ()


def source(domain: str, recipe: Recipe) -> Source:
    """The training set of `domain` under `recipe`'s data settings."""
    get_domain(domain)
    if domain == "instruction":
        return Source(domain, HubDataset("allenai/tulu-3-sft-personas-instruction-following"), ("messages",),
                      _first_exchange)
    if domain == "math":
        return Source(domain, HubDataset(f"hkust-nlp/{recipe.math_subset}"), ("query", "response"),
                      _columns("query", "response"))
    if domain == "coding":
        return Source(domain, HubDataset("ise-uiuc/Magicoder-Evol-Instruct-110K"), ("instruction", "response"),
                      _columns("instruction", "response"))
    if domain == "multilingual":
        languages = {x.strip() for x in recipe.aya_languages.split(",") if x.strip()}
        return Source(domain, HubDataset("CohereForAI/aya_dataset"), ("inputs", "targets"),
                      _columns("inputs", "targets"),
                      (lambda row: row["language"] in languages) if languages else None,
                      ("language",) if languages else ())
    unharmful = recipe.safety_responses == "unharmful"
    return Source(domain, HubDataset("allenai/wildguardmix", "wildguardtrain", gated=True), ("prompt", "response"),
                  _columns("prompt", "response"),
                  (lambda row: row["response_harm_label"] != "harmful") if unharmful else None,
                  ("response_harm_label",) if unharmful else ())


def _usable(text: Any) -> bool:
    return isinstance(text, str) and bool(text.strip())


def load_domain(domain: str, recipe: Recipe) -> tuple[list[dict], dict[str, Any]]:
    """(rows, provenance): the domain's chosen {"prompt", "response"} rows and where they came from."""
    src = source(domain, recipe)
    ds, revision = open_dataset(src.dataset, what=f"{domain} training set")
    needed = src.columns + src.filter_columns
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise MergeBenchError(f"{src.dataset.describe()}: has columns {sorted(ds.column_names)}; the {domain} "
                              f"loader needs {', '.join(needed)}")
    usable: list[dict] = []
    filtered = 0
    for row in ds.select_columns(list(dict.fromkeys(needed))):
        prompt, response = src.pair(row)
        if not (_usable(prompt) and _usable(response)):
            continue
        if src.keep is not None and not src.keep(row):
            filtered += 1
            continue
        usable.append({"prompt": prompt, "response": response})
    if not usable:
        raise MergeBenchError(f"{src.dataset.describe()}: no usable rows for the {domain} domain "
                              f"(of {len(ds)}, {filtered} filtered out by the recipe)")
    rows = [usable[i] for i in choose(len(usable), recipe.max_samples, recipe.data_seed)]
    info = {"domain": domain, "repo": src.dataset.repo, "config": src.dataset.config, "split": src.dataset.split,
            "revision": revision, "rows": len(ds), "incomplete": len(ds) - len(usable) - filtered,
            "filtered": filtered, "kept": len(rows)}
    return rows, info


def load_training_rows(name: str, recipe: Recipe) -> tuple[list[dict], list[dict[str, Any]]]:
    """A specialist's rows (`name` a domain) or the multi-task baseline's (`name` "multitask")."""
    domains = DOMAIN_NAMES if name == "multitask" else (name,)
    rows: list[dict] = []
    infos = []
    for domain in domains:
        part, info = load_domain(domain, recipe)
        rows += part
        infos.append(info)
    return rows, infos
