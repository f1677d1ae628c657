"""Run under torchrun by test_finetune_launch.py: a DeepSpeed ZeRO-3 run straight, and one halted after two
of its four steps then resumed from its checkpoint, both through `finetune` on every rank.

argv: model directory, output directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

from transformers import AutoTokenizer

from mergebench.finetune.distributed import deepspeed_config, plan_batches
from mergebench.finetune.recipe import Recipe
from mergebench.finetune.trainer import finetune

model, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = [{"prompt": f"What is {a} plus {b}?", "response": f"{a} plus {b} is {a + b}."} for a in range(4) for b in range(4)]
recipe = Recipe(backend="deepspeed", global_batch=4, micro_batch=1, seq_len=128, epochs=1.0, bf16=False, threads=1,
                packing=False, lr=1e-3, save_every=2)
config = deepspeed_config(recipe, plan_batches(recipe, 2))
tok = AutoTokenizer.from_pretrained(str(model))
finetune(model, tok, rows, recipe, out / "straight", ds_config=config)
part = finetune(model, tok, rows, recipe, out / "resumed", ds_config=config, halt_after=2)
assert part.steps == 2 and not (out / "resumed" / "manifest.json").exists()
res = finetune(model, tok, rows, recipe, out / "resumed", ds_config=config)
print(f"resumed_from={res.resumed_from} steps={res.steps}", flush=True)
