"""The prompt templates of MergeBench's finetuning recipe, in one place: training, statistics passes
and evaluation must format prompts identically, or the numbers silently drift.

"alpaca" is the paper's template (with its "### Input:" variant when a row has context);
"alpaca-short" drops the fixed preamble, which carries no information and would double the tiny
family's sequence length.
"""

from __future__ import annotations

from mergebench.catalog.domains import unknown

PREAMBLE = "Below is an instruction that describes a task."
PREAMBLE_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                       "context.")
REQUEST = "Write a response that appropriately completes the request."
TEMPLATES = ("alpaca", "alpaca-short")


def format_prompt(instruction: str, template: str = "alpaca", context: str = "") -> str:
    """The prompt up to and including the response header; the response follows it directly."""
    if template not in TEMPLATES:
        raise unknown("prompt template", template, TEMPLATES)
    parts = [f"### Instruction:\n{instruction}"]
    if context:
        parts.append(f"### Input:\n{context}")
    if template == "alpaca":
        parts.insert(0, f"{PREAMBLE_WITH_INPUT if context else PREAMBLE} {REQUEST}")
    parts.append("### Response:\n")
    return "\n\n".join(parts)
