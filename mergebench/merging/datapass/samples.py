"""Validation data for the data-dependent methods: N formatted (prompt, response) samples of a domain.

Two sources, one interface (`load_samples`):
- a local JSONL file, or a directory of them, whose rows carry `prompt`/`response` or the columns of any
  MergeBench validation set (the tiny suite and the tests use this);
- the MergeBench validation sets `MergeBench/<domain>_val` (split `train`), read offline from the Hugging
  Face caches by `mergebench.hubdata` (the kit's one reader of hub datasets).

Selection is deterministic (`mergebench.hubdata.choose`): the rows are shuffled by a generator seeded with
`seed`, and the first `count` are taken (all rows when there are fewer). The same (source, seed, count)
always gives the same samples, and a smaller count gives a prefix of a larger one's samples.

Every sample is rendered with the Alpaca-style prompt the specialists were trained with (SPEC,
"Finetuning"); the response follows the prompt directly, so the prompt's token count marks where the
response tokens (the ones the Fisher loss is taken on) begin.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mergebench.catalog.domains import validation_repo
from mergebench.catalog.prompts import format_prompt
from mergebench.errors import MergeBenchError
from mergebench.hubdata import HubDataset, choose, open_dataset

#: The five domains in the kit's canonical order (also the specialist order of the reference).
DOMAINS = ("instruction", "math", "coding", "safety", "multilingual")

#: Per MergeBench validation set: (instruction column, optional input column, response column).
COLUMNS: dict[str, tuple[str, str | None, str]] = {
    "instruction": ("instruction", "input", "output"),
    "math": ("query", None, "response"),
    "coding": ("instruction", None, "response"),
    "multilingual": ("inputs", None, "targets"),
    "safety": ("prompt", None, "response"),
}

@dataclass(frozen=True)
class Sample:
    """One validation example: the formatted prompt and the response that follows it."""

    prompt: str
    response: str

    @property
    def text(self) -> str:
        return self.prompt + self.response


def check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise MergeBenchError(f"unknown domain {domain!r}; known domains: {', '.join(DOMAINS)}")
    return domain


def row_to_sample(row: dict, where: str, template: str = "alpaca") -> Sample:
    """A row with `prompt`/`response` or any MergeBench validation set's columns, as a Sample."""
    if not isinstance(row, dict):
        raise MergeBenchError(f"{where}: expected a JSON object per row")
    if "prompt" in row and "response" in row:
        instruction, context, response = row["prompt"], "", row["response"]
    else:
        for inst_col, ctx_col, resp_col in COLUMNS.values():
            if inst_col in row and resp_col in row:
                instruction, response = row[inst_col], row[resp_col]
                context = (row.get(ctx_col) or "") if ctx_col else ""
                break
        else:
            known = "; ".join(f"{i}{'/' + c if c else ''}/{r}" for i, c, r in COLUMNS.values())
            raise MergeBenchError(f"{where}: row has columns {sorted(row)}; expected prompt/response or one of: {known}")
    if not isinstance(instruction, str) or not isinstance(response, str) or not isinstance(context, str):
        raise MergeBenchError(f"{where}: prompt and response must be strings")
    return Sample(format_prompt(instruction, template, context), response)


def _read_jsonl(path: Path, template: str) -> list[Sample]:
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise MergeBenchError(f"{path}: cannot read ({e.strerror})") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise MergeBenchError(f"{path}:{i}: invalid JSON ({e.msg})") from None
        out.append(row_to_sample(row, f"{path}:{i}", template))
    return out


def _domain_file(path: Path, domain: str) -> Path:
    """In a directory of per-domain files: <domain>.jsonl or <domain>_val.jsonl."""
    for name in (f"{domain}.jsonl", f"{domain}_val.jsonl"):
        if (path / name).is_file():
            return path / name
    raise MergeBenchError(f"{path}: no {domain}.jsonl or {domain}_val.jsonl in this directory")


def _local_rows(path: Path, domain: str | None, template: str) -> list[Sample]:
    if path.is_file():
        return _read_jsonl(path, template)
    if domain is not None:
        return _read_jsonl(_domain_file(path, domain), template)
    files = sorted(path.glob("*.jsonl"))
    if not files:
        raise MergeBenchError(f"{path}: directory holds no .jsonl files")
    return [s for f in files for s in _read_jsonl(f, template)]


def _hub_rows(domain: str, template: str) -> list[Sample]:
    ref = HubDataset(validation_repo(domain))
    ds, _ = open_dataset(ref, what="validation set", alternative=", or pass a local JSONL file with --data")
    return [row_to_sample(dict(row), f"{ref.repo} row {i}", template) for i, row in enumerate(ds)]


def describe_source(source: str, domain: str | None = None) -> str:
    """What a --data value reads, for manifests: 'MergeBench/math_val' or the resolved local file."""
    path = Path(source).expanduser()
    if not path.exists() and source in DOMAINS:
        return validation_repo(source)
    if path.is_dir() and domain is not None:
        path = _domain_file(path, domain)
    return str(path.resolve())


def load_samples(source: str, count: int, seed: int = 0, domain: str | None = None,
                 template: str = "alpaca") -> list[Sample]:
    """`count` samples chosen deterministically by `seed` from `source`.

    `source` is a domain name (its MergeBench validation set), a JSONL file, or a directory: with a
    `domain`, the directory's `<domain>.jsonl` (or `<domain>_val.jsonl`); without, all its `*.jsonl`.
    """
    if count < 1:
        raise MergeBenchError(f"sample count must be at least 1 (got {count})")
    if domain is not None:
        check_domain(domain)
    path = Path(source).expanduser()
    if path.exists():
        rows = _local_rows(path, domain, template)
    elif source in DOMAINS:
        rows = _hub_rows(source, template)
    elif "/" in source or source.endswith(".jsonl"):
        raise MergeBenchError(f"{source}: no such file or directory")
    else:
        raise MergeBenchError(f"unknown domain {source!r}; known domains: {', '.join(DOMAINS)} (or give a JSONL path)")
    if not rows:
        raise MergeBenchError(f"{source}: no samples")
    return [rows[i] for i in choose(len(rows), count, seed)]
