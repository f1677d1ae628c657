"""The eight MergeBench base models (and the kit's CPU-sized `tiny` family) with their hub ids.

Embedding facts live here because merging depends on them: tied embeddings decide whether an lm_head
tensor exists, and specialists may carry more vocabulary rows than their base.
"""

from __future__ import annotations

from dataclasses import dataclass

from mergebench.catalog.domains import DOMAIN_NAMES, get_domain, unknown
from mergebench.errors import MergeBenchError


@dataclass(frozen=True)
class BaseModel:
    """A base LLM the five specialists were finetuned from."""

    name: str
    #: Hugging Face repo id; None for models the kit builds locally (tiny).
    hub_id: str | None
    tied_embeddings: bool
    vocab_size: int
    instruct: bool
    #: Architecture family, for code that must special-case Llama vs Gemma-2.
    family: str

    @property
    def local(self) -> bool:
        """True for models built by the kit rather than downloaded."""
        return self.hub_id is None

    def specialist_repo_id(self, domain: str) -> str:
        """Hub id of this base's specialist for `domain`: MergeBench/<base repo name>_<domain>."""
        get_domain(domain)
        if self.hub_id is None:
            raise MergeBenchError(
                f"model {self.name!r} is built locally by the kit and has no hub specialists; "
                f"its {domain} specialist comes from the tiny family builder"
            )
        return f"MergeBench/{self.hub_id.rsplit('/', 1)[-1]}_{domain}"

    def specialist_repo_ids(self) -> dict[str, str]:
        """All five specialist hub ids, by domain."""
        return {domain: self.specialist_repo_id(domain) for domain in DOMAIN_NAMES}


def _llama(name: str, hub_id: str, *, tied: bool, instruct: bool) -> BaseModel:
    return BaseModel(name, hub_id, tied, 128256, instruct, "llama")


def _gemma(name: str, hub_id: str, *, instruct: bool) -> BaseModel:
    # Gemma-2 ties its embeddings at every size.
    return BaseModel(name, hub_id, True, 256000, instruct, "gemma2")


_ALL = (
    _llama("llama-3.2-3b", "meta-llama/Llama-3.2-3B", tied=True, instruct=False),
    _llama("llama-3.2-3b-instruct", "meta-llama/Llama-3.2-3B-Instruct", tied=True, instruct=True),
    _llama("llama-3.1-8b", "meta-llama/Llama-3.1-8B", tied=False, instruct=False),
    _llama("llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", tied=False, instruct=True),
    _gemma("gemma-2-2b", "google/gemma-2-2b", instruct=False),
    _gemma("gemma-2-2b-it", "google/gemma-2-2b-it", instruct=True),
    _gemma("gemma-2-9b", "google/gemma-2-9b", instruct=False),
    _gemma("gemma-2-9b-it", "google/gemma-2-9b-it", instruct=True),
    # Built from scratch by the kit so the whole pipeline runs on a CPU in minutes. Untied on purpose:
    # it exercises the separate-lm_head path that Llama-3.1-8B needs. The tiny builder owns these sizes.
    BaseModel("tiny", None, False, 512, False, "tiny"),
)

#: Every known base, by kit short name.
MODELS: dict[str, BaseModel] = {m.name: m for m in _ALL}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def get_model(name: str) -> BaseModel:
    """The base called `name` (kit short name), or an error listing the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise unknown("model", name, MODEL_NAMES) from None


def specialist_repo_id(model: str, domain: str) -> str:
    """Hub id of the `domain` specialist of base `model`, e.g. MergeBench/Llama-3.2-3B_math."""
    return get_model(model).specialist_repo_id(domain)
