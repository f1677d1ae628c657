"""Build the tiny family: data, tokenizer, base, five specialists and the multi-task baseline.

Layout of a family directory (each part written under a temporary name, renamed when complete, and
skipped on a rerun once its manifest exists):

    data/<domain>/{train,validation,test}.jsonl   (five domains + general)
    tokenizer/                                     tokenizer.json, tokenizer_config.json
    base/  math/  coding/  multilingual/  instruction/  safety/  multitask/   HF model directories
    manifest.json                                  seed, config, recipes and file hashes of the family

The base is pretrained from scratch on the general skills plus a thin slice of each domain, so it
knows the prompt format and the domains' vocabulary without mastering them, the way a pretrained LLM
relates to MergeBench's specialists. Specialists and the multi-task model are finetuned from it with
one recipe, as in the paper.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergebench.errors import MergeBenchError
from mergebench.finetune.data import format_prompt
from mergebench.finetune.recipe import TINY_RECIPE, Recipe
from mergebench.finetune.trainer import MANIFEST, finetune, is_complete
from mergebench.tiny.tasks import DOMAINS, GENERAL, SplitSizes, dictionary_rows, export_splits, read_jsonl
from mergebench.tiny.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

MODELS = ("base",) + DOMAINS + ("multitask",)
#: The float kernels every model of the family trains with, on any CPU. Left to choose, torch uses the
#: widest the CPU has (AVX-512 here, AVX2 on many laptops and servers), and the rounding of its
#: vectorized reductions differs between them: trained on one or the other, the family's scores moved by
#: up to 0.1 and the merge-ordering tests failed. Pinned, the family is bit-identical on every x86-64 CPU
#: with AVX2 (MKL and oneDNN are pinned too, for their conditional-reproducibility modes).
KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
#: (name, done, total) for the progress display; total is the number of optimizer steps of a model.
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ModelShape:
    """A Llama-shaped model small enough to train in seconds on two CPU cores."""

    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 128
    #: Untied, as the catalog declares: the family exercises the separate-lm_head path of Llama-3.1-8B.
    tie_word_embeddings: bool = False


@dataclass(frozen=True)
class FamilyConfig:
    """Everything that determines the family; its JSON is the key a rerun compares against."""

    seed: int = 0
    shape: ModelShape = ModelShape()
    sizes: SplitSizes = SplitSizes()
    base_recipe: Recipe = TINY_RECIPE.override(lr=2e-3, epochs=10.0)
    #: 8 epochs: with the kernels pinned (`KERNELS`), 6 left the merge below the base on multilingual.
    specialist_recipe: Recipe = TINY_RECIPE.override(lr=7e-4, epochs=8.0)
    #: Math, the hardest stand-in, trains longer: with the common recipe its specialist's lead over the
    #: base swung from +0.15 to +0.40 with the CPU's float kernels (before they were pinned), around the required +0.3.
    math_recipe: Recipe = TINY_RECIPE.override(lr=1e-3, epochs=12.0)
    multitask_recipe: Recipe = TINY_RECIPE.override(lr=7e-4, epochs=6.0)
    #: Fraction of each domain's training rows the base sees (weak exposure, not mastery) ...
    base_domain_fraction: float = 0.1
    #: ... and of the rows it is meant not to have learned (refusals, most format constraints): just
    #: enough that every response token has been predicted once, because a merge keeps the base's
    #: lm_head and could never produce a token the base has never emitted.
    base_hidden_fraction: float = 0.01
    #: Copies of the invented dictionary ("What is cat in Zorbic?") in the base mixture: pretraining
    #: knowledge that the multilingual specialist learns to use for translating whole phrases.
    base_dictionary_repeat: int = 2
    #: Copies of the general training rows in the base mixture.
    base_general_repeat: int = 1

    def recipe(self, name: str) -> Recipe:
        """The recipe that trains one model of the family."""
        return {"base": self.base_recipe, "multitask": self.multitask_recipe,
                "math": self.math_recipe}.get(name, self.specialist_recipe)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _llama_config(shape: ModelShape, tok):
    from transformers import LlamaConfig

    return LlamaConfig(**dataclasses.asdict(shape), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, attention_dropout=0.0, rms_norm_eps=1e-5)


def _atomic_dir(out: Path, write: Callable[[Path], None]) -> None:
    """Run `write(tmp)` and rename tmp to out; a crash leaves only a temporary directory behind."""
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def _write_data(cfg: FamilyConfig, tmp: Path) -> None:
    export_splits(tmp, cfg.seed, cfg.sizes)
    (tmp / MANIFEST).write_text(json.dumps({"key": part_key("data", cfg), "seed": cfg.seed,
                                            "sizes": dataclasses.asdict(cfg.sizes)}, indent=2, sort_keys=True) + "\n")


def _write_tokenizer(cfg: FamilyConfig, data: Path, tmp: Path) -> None:
    texts = []
    for d in DOMAINS + (GENERAL,):
        for r in read_jsonl(data / d / "train.jsonl"):
            texts.append(format_prompt(r["prompt"], cfg.base_recipe.template) + r["response"])
    save_tokenizer(train_tokenizer(texts, cfg.shape.vocab_size), tmp)
    (tmp / MANIFEST).write_text(json.dumps({"key": part_key("tokenizer", cfg), "seed": cfg.seed,
                                            "vocab_size": cfg.shape.vocab_size}, indent=2, sort_keys=True) + "\n")


def base_may_see(row: dict) -> bool:
    """The base's partial exposure: like a pretrained LLM, it follows some formats and complies with
    every request, but it was never taught to refuse or to follow most format constraints."""
    if row["domain"] == "safety":
        return not row["harmful"]
    if row["domain"] == "instruction":
        return row["constraint"] == "brackets"
    return True


def training_rows(name: str, cfg: FamilyConfig, data: Path) -> list[dict]:
    """The rows each model of the family trains on (general rows never reach a specialist)."""
    def train(d: str) -> list[dict]:
        return read_jsonl(data / d / "train.jsonl")

    if name == "base":
        rows = train(GENERAL) * cfg.base_general_repeat
        rng = random.Random(f"{cfg.seed}:base-mixture")
        for d in DOMAINS:
            seen = [r for r in train(d) if base_may_see(r)]
            hidden = [r for r in train(d) if not base_may_see(r)]
            rows += rng.sample(seen, round(cfg.base_domain_fraction * len(seen)))
            rows += rng.sample(hidden, round(cfg.base_hidden_fraction * len(hidden)))
        return rows + dictionary_rows() * cfg.base_dictionary_repeat
    if name == "multitask":
        return [r for d in DOMAINS for r in train(d)]
    if name in DOMAINS:
        return train(name)
    raise MergeBenchError(f"unknown tiny model {name!r}; known: {', '.join(MODELS)}")


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root (relative paths), skipping temporary directories."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts) and rel.as_posix() != MANIFEST:
            out[rel.as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def part_key(name: str, cfg: FamilyConfig) -> str:
    """What determines one part of the family: its own settings and the keys of the parts it starts from.

    A rerun compares this with the part's manifest, so changing the specialist recipe never retrains
    the base, and a directory built with other settings is refused rather than silently mixed.
    """
    data = _digest("data", cfg.seed, dataclasses.asdict(cfg.sizes))
    if name == "data":
        return data
    tokenizer = _digest("tokenizer", data, cfg.shape.vocab_size, cfg.base_recipe.template)
    if name == "tokenizer":
        return tokenizer
    base = _digest("base", tokenizer, dataclasses.asdict(cfg.shape), cfg.base_recipe.to_dict(),
                   cfg.base_domain_fraction, cfg.base_hidden_fraction, cfg.base_dictionary_repeat,
                   cfg.base_general_repeat)
    if name == "base":
        return base
    return _digest(name, base, cfg.recipe(name).to_dict())


def _check_part(path: Path, name: str, cfg: FamilyConfig) -> bool:
    """True if the part is complete and was built with this configuration; an error if built otherwise."""
    if not is_complete(path):
        return False
    existing = json.loads((path / MANIFEST).read_text()).get("key")
    if existing != part_key(name, cfg):
        raise MergeBenchError(f"{path}: was built with another configuration (key {existing}, this one "
                              f"{part_key(name, cfg)}); use a new --out directory")
    return True


def _train_part(out: Path, cfg: FamilyConfig, name: str, progress: ProgressFn | None) -> None:
    """Train one model of the family (the base from scratch, the others from the base)."""
    tok = load_tokenizer(out / "tokenizer")
    recipe = cfg.recipe(name)
    init = _llama_config(cfg.shape, tok) if name == "base" else out / "base"

    def report(step: int, total: int, _loss: float) -> None:
        if progress:
            progress(name, step, total)

    finetune(init, tok, training_rows(name, cfg, out / "data"), recipe, out / name,
             init_label="scratch" if name == "base" else "base", progress=report,
             extra_manifest={"model": name, "key": part_key(name, cfg)})


def _run_worker(out: Path, cfg_file: Path, names: list[str], progress: ProgressFn | None) -> None:
    """Train some models, one after the other, in a fresh interpreter (`python -m mergebench.tiny.build`)
    with the pinned `KERNELS`, relaying its progress.

    A fresh interpreter because torch picks its kernels once, when it loads; a subprocess rather than
    multiprocessing because it needs no `if __name__ == "__main__"` guard in the caller's script, and a
    crash in one model's training cannot take the parent down with it.
    """
    cmd = [sys.executable, "-m", "mergebench.tiny.build", str(out), str(cfg_file), *names]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **KERNELS})
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        parts = line.split()
        if len(parts) == 4 and parts[0] == "progress" and progress:
            progress(parts[1], int(parts[2]), int(parts[3]))
    err = proc.stderr.read()
    if proc.wait() != 0:
        last = [ln for ln in err.strip().splitlines() if ln.strip()]
        raise MergeBenchError(f"training {', '.join(names)} failed: "
                              f"{last[-1] if last else f'exit code {proc.returncode}'}")


def _balance(costs: dict[str, int], workers: int) -> list[list[str]]:
    """Longest job first onto the least-loaded worker: the multi-task model (the union of the domains)
    goes alone, the five specialists share the other worker."""
    groups: list[list[str]] = [[] for _ in range(workers)]
    load = [0] * workers
    for name in sorted(costs, key=lambda n: (-costs[n], MODELS.index(n))):
        i = load.index(min(load))
        groups[i].append(name)
        load[i] += costs[name]
    return [sorted(g, key=MODELS.index) for g in groups if g]


def _train_in_workers(out: Path, cfg: FamilyConfig, cfg_file: Path, names: list[str], workers: int,
                      progress: ProgressFn | None) -> None:
    """Train independent models in `workers` single-threaded processes; results do not depend on how
    many run at once, because each is a deterministic function of its inputs alone."""
    from concurrent.futures import ThreadPoolExecutor

    groups = _balance({n: len(training_rows(n, cfg, out / "data")) for n in names}, workers)
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        for f in [pool.submit(_run_worker, out, cfg_file, g, progress) for g in groups]:
            f.result()


def build_family(out: Path, cfg: FamilyConfig = FamilyConfig(), models: tuple[str, ...] = MODELS,
                 progress: ProgressFn | None = None, workers: int = 2) -> dict[str, Path]:
    """Build (or finish building) the family in `out`; returns the directory of every model built.

    The base trains first (everything else starts from it); the specialists and the multi-task model
    then train in `workers` processes at once. Output is identical for any number of workers.
    """
    out = Path(out)
    for m in models:
        if m not in MODELS:
            raise MergeBenchError(f"unknown tiny model {m!r}; known: {', '.join(MODELS)}")
    out.mkdir(parents=True, exist_ok=True)
    data, tok_dir = out / "data", out / "tokenizer"
    if not _check_part(data, "data", cfg):
        _atomic_dir(data, lambda tmp: _write_data(cfg, tmp))
    if not _check_part(tok_dir, "tokenizer", cfg):
        _atomic_dir(tok_dir, lambda tmp: _write_tokenizer(cfg, data, tmp))
    wanted = ("base",) + tuple(m for m in MODELS if m in models and m != "base")
    todo = []
    for name in wanted:
        if _check_part(out / name, name, cfg):
            if progress:
                progress(name, 1, 1)
        else:
            todo.append(name)
    cfg_file = out / ".family-config.pkl"
    cfg_file.write_bytes(pickle.dumps(cfg))
    try:
        if "base" in todo:  # everything else starts from it
            _run_worker(out, cfg_file, ["base"], progress)
            todo.remove("base")
        if todo:
            _train_in_workers(out, cfg, cfg_file, todo, max(1, workers), progress)
    finally:
        cfg_file.unlink(missing_ok=True)
    if set(models) == set(MODELS):
        manifest = {"config_key": cfg.key(), "config": cfg.to_dict(), "seed": cfg.seed, "models": list(MODELS),
                    "keys": {m: part_key(m, cfg) for m in ("data", "tokenizer") + MODELS},
                    "files": file_hashes(out)}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return {name: out / name for name in wanted}


def _worker_main(argv: list[str]) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stdout carries progress lines for the parent only
    out, cfg_file, names = Path(argv[0]), Path(argv[1]), argv[2:]
    cfg = pickle.loads(cfg_file.read_bytes())

    def progress(n: str, done: int, total: int) -> None:
        if done == total or done % 5 == 0:
            print(f"progress {n} {done} {total}", flush=True)

    for name in names:
        _train_part(out, cfg, name, progress)


if __name__ == "__main__":  # a worker of _train_parallel
    _worker_main(sys.argv[1:])
