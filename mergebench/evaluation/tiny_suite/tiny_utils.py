"""Functions the tiny suite's lm-eval YAML tasks call (`!function tiny_utils.<name>`).

Prompts use the very template the tiny family was finetuned with; scoring uses the family's own
checkers, so the lm-eval numbers and the family's quick scorer agree by construction.
"""

from __future__ import annotations

import random

from mergebench.tiny.score import prompt
from mergebench.tiny.tasks import ZORBIC, check


def doc_to_text(doc: dict) -> str:
    return prompt(doc["prompt"])


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return {"acc": float(check(doc, results[0]))}


def _rng(doc: dict) -> random.Random:
    return random.Random(doc["prompt"])


def math_choices(doc: dict) -> list[str]:
    """The right answer and three near misses, in a per-question fixed order."""
    answer = int(doc["response"])
    wrong = sorted({answer + d for d in (-2, -1, 1, 2, 3, -3, 10)} - {answer})
    options = [str(answer)] + [str(w) for w in _rng(doc).sample(wrong, 3)]
    _rng(doc).shuffle(options)
    return options


def multilingual_choices(doc: dict) -> list[str]:
    """The right translation and three with one word swapped for another invented word."""
    words = doc["response"].split()
    vocab = sorted(set(ZORBIC.values()))
    rng = _rng(doc)
    options = {doc["response"]}
    while len(options) < 4:
        i = rng.randrange(len(words))
        options.add(" ".join(words[:i] + [rng.choice(vocab)] + words[i + 1:]))
    ordered = sorted(options)
    rng.shuffle(ordered)
    return ordered


def math_target(doc: dict) -> int:
    return math_choices(doc).index(doc["response"])


def multilingual_target(doc: dict) -> int:
    return multilingual_choices(doc).index(doc["response"])
