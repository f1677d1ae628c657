"""Checkpoints that every image of the kit reads the same way, whichever transformers wrote them.

transformers 5 (this venv) writes two things transformers 4.57 (the images' lock) misreads: the tokenizer
class `TokenizersBackend`, which 4.57 does not know (it refuses to load), and RoPE's base frequency only
inside `rope_parameters`, which 4.57 does not read (it would silently fall back to its default θ and
compute a different model). Both versions read `PreTrainedTokenizerFast` and a top-level `rope_theta` as
meant, so a model written here is given those too. Found by the docker rehearsal (docs/rehearsal.md).
"""

from __future__ import annotations

import json
from pathlib import Path

PORTABLE_TOKENIZER = "PreTrainedTokenizerFast"


def make_portable(model_dir: Path) -> None:
    model_dir = Path(model_dir)
    tok = model_dir / "tokenizer_config.json"
    if tok.is_file():
        data = json.loads(tok.read_text())
        if data.get("tokenizer_class") == "TokenizersBackend":
            data["tokenizer_class"] = PORTABLE_TOKENIZER
            tok.write_text(json.dumps(data, indent=2) + "\n")
    cfg = model_dir / "config.json"
    if cfg.is_file():
        data = json.loads(cfg.read_text())
        rope = data.get("rope_parameters")
        if isinstance(rope, dict) and "rope_theta" in rope and "rope_theta" not in data:
            data["rope_theta"] = rope["rope_theta"]
            cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
