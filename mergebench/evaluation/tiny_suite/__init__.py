"""The tiny evaluation suite: the tiny family's domains as lm-eval tasks over its exported JSONL.

The YAML files here are templates: `write_tasks` copies them with the family's data folder filled in
(lm-eval YAML has no variables), next to `tiny_utils.py`, into a folder passed as `--include_path`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).parent
GENERATE_TASKS = ("tiny_instruction", "tiny_math", "tiny_coding", "tiny_multilingual", "tiny_safety", "tiny_general")
CHOICE_TASKS = ("tiny_math_mc", "tiny_multilingual_mc")
TASKS = GENERATE_TASKS + CHOICE_TASKS
#: Which kit domain each task scores (general = the held-out forgetting suite).
TASK_DOMAIN = {t: t.removeprefix("tiny_").removesuffix("_mc") for t in TASKS}
PLACEHOLDER = "__DATA_DIR__"


def write_tasks(data_dir: Path, dest: Path, split: str = "test") -> Path:
    """Concrete task YAMLs for the family's `data_dir`, written into `dest` (returned)."""
    dest.mkdir(parents=True, exist_ok=True)
    for template in sorted(HERE.glob("*.yaml")):
        text = template.read_text().replace(PLACEHOLDER, str(Path(data_dir).resolve()))
        text = text.replace("/test.jsonl", f"/{split}.jsonl")
        (dest / template.name).write_text(text)
    shutil.copyfile(HERE / "tiny_utils.py", dest / "tiny_utils.py")
    return dest
