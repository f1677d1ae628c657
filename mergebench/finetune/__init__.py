"""Supervised finetuning of specialists and the multi-task baseline: recipes, data, one training loop.

`Recipe()` is MergeBench's published recipe; `TINY_RECIPE` is the CPU-sized one the tiny family uses.
Both run through `finetune()`, so the tiny family exercises the code the full-scale runs will use.
MergeBench's training sets come from `sources` (read offline through `mergebench.hubdata`); `distributed`
splits the global batch over one node's GPUs and writes the DeepSpeed ZeRO-3 launch (docs/finetune.md).
"""

from mergebench.finetune.recipe import TINY_RECIPE, Recipe

__all__ = ["TINY_RECIPE", "Recipe", "finetune"]


def __getattr__(name: str):
    # The loop imports torch; a host without it can still read recipes.
    if name == "finetune":
        from mergebench.finetune.trainer import finetune

        return finetune
    raise AttributeError(name)
