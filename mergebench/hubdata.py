"""Hugging Face datasets, read offline: the one place the kit opens a dataset from the hub's caches.

A hub dataset can sit in either of two caches, and `open_dataset` looks in both, never over the network:

- the hub cache (`HF_HUB_CACHE`, default `$HF_HOME/hub`): `datasets--ORG--NAME/snapshots/<sha>/`, the
  repository's files as `hf download ORG/NAME --repo-type dataset` (or a fetch stage) writes them. With the
  hub offline, `datasets.load_dataset("ORG/NAME")` does not look there (checked with datasets 5.2: it raises
  ConnectionError), so the snapshot is loaded as a local dataset directory: its README's configs and data
  files, exactly what the hub would serve;
- the `datasets` cache (`HF_DATASETS_CACHE`, default `$HF_HOME/datasets`): the Arrow files an earlier online
  `load_dataset("ORG/NAME")` prepared under `ORG___NAME/<config>/<version>/<hash>/`, which `datasets` finds
  by itself when offline.

A dataset in neither is a one-line MergeBenchError that names it and says how to fetch it. `datasets` is
an optional dependency, imported only here and only when a dataset is opened.

`choose` is the kit's deterministic selection: shuffle row numbers with a generator seeded by `seed` and
keep the first `count`, so the same (rows, seed, count) always gives the same rows and a smaller count
gives a prefix of a larger one's.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergebench.errors import MergeBenchError


@dataclass(frozen=True)
class HubDataset:
    """One split of one config of a hub dataset repository."""

    repo: str
    config: str | None = None
    split: str = "train"
    #: Gated repositories need an HF token with access, at fetch time only.
    gated: bool = False

    def describe(self) -> str:
        parts = ([f"config {self.config}"] if self.config else []) + [f"split {self.split}"]
        return f"{self.repo} ({', '.join(parts)})"

    def fetch_hint(self) -> str:
        token = " with HF_TOKEN set to a token that has accepted its terms (gated)" if self.gated else ""
        return f"fetch it with `hf download {self.repo} --repo-type dataset`{token}"


def _home() -> Path:
    return Path(os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")


def hub_cache() -> Path:
    """Where `hf download` puts repositories, resolved now (not when huggingface_hub was imported)."""
    return Path(os.environ.get("HF_HUB_CACHE") or _home() / "hub").expanduser()


def datasets_cache() -> Path:
    """Where `datasets` keeps the Arrow files it prepared."""
    return Path(os.environ.get("HF_DATASETS_CACHE") or _home() / "datasets").expanduser()


def snapshot(repo: str) -> Path | None:
    """The cached snapshot directory of a dataset repository (the revision `main` points at), or None."""
    try:
        from huggingface_hub import snapshot_download

        with offline():
            return Path(snapshot_download(repo, repo_type="dataset", local_files_only=True, cache_dir=hub_cache()))
    except Exception:  # noqa: BLE001 - huggingface_hub raises several kinds; all mean "not cached"
        return None


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """HF_HUB_OFFLINE for the duration, also for libraries that read it once, when they were imported."""
    import sys

    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    os.environ.update({k: "1" for k in saved_env})
    patched = []
    for module, attr in (("datasets.config", "HF_HUB_OFFLINE"), ("huggingface_hub.constants", "HF_HUB_OFFLINE")):
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, attr):
            patched.append((mod, attr, getattr(mod, attr)))
            setattr(mod, attr, True)
    try:
        yield
    finally:
        for mod, attr, value in patched:
            setattr(mod, attr, value)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _datasets(ref: HubDataset, what: str, alternative: str):
    try:
        import datasets
    except ImportError:
        raise MergeBenchError(f"{what} {ref.repo} needs the `datasets` package, which is not installed; "
                              f"`pip install datasets`, then {ref.fetch_hint()}{alternative}") from None
    datasets.disable_progress_bars()
    return datasets


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else e.__class__.__name__


def open_dataset(ref: HubDataset, what: str = "dataset", alternative: str = "") -> tuple[Any, str | None]:
    """(the split as a `datasets.Dataset`, the snapshot's revision or None) from the local caches only.

    `what` names the dataset's role in messages; `alternative` ends the "how to fetch it" hint.
    """
    datasets = _datasets(ref, what, alternative)
    snap = snapshot(ref.repo)
    with offline():
        if snap is not None:
            try:
                ds = datasets.load_dataset(str(snap), ref.config, split=ref.split, cache_dir=str(datasets_cache()))
            except ValueError as e:  # an unknown config or split: the message lists the known ones
                raise MergeBenchError(f"{what} {ref.describe()}: {_first_line(e)}") from None
            except Exception as e:  # noqa: BLE001 - a damaged snapshot; say which file tree
                raise MergeBenchError(f"{what} {ref.describe()}: cached snapshot {snap} cannot be read "
                                      f"({e.__class__.__name__}: {_first_line(e)})") from None
            return ds, snap.name
        try:
            ds = datasets.load_dataset(ref.repo, ref.config, split=ref.split, cache_dir=str(datasets_cache()))
        except Exception as e:  # noqa: BLE001 - datasets raises many kinds; all mean "not available offline"
            raise MergeBenchError(
                f"{what} {ref.describe()} is not in the Hugging Face cache (HF_HOME={_home()}, "
                f"{e.__class__.__name__}); {ref.fetch_hint()}{alternative}") from None
    return ds, None


def choose(n: int, count: int | None, seed: int) -> list[int]:
    """`count` of the row numbers 0..n-1 (all when None or larger), in an order fixed by `seed`."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order if count is None else order[:count]
