"""A family: one base and its five domain specialists (plus, optionally, a multi-task model), the unit
the MergeBench protocol runs on.

The eight MergeBench bases are shipped as family files (`families/<name>.yaml` beside this module),
and a researcher's own family is a file of the same form, so one mechanism plans both:

    name: my-qwen
    base: Qwen/Qwen2.5-1.5B            # a hub id or a local directory (relative to the file)
    specialists: {instruction: ..., math: ..., multilingual: ..., coding: ..., safety: ...}
    multitask: ...                     # optional, a model trained on all five

Loading checks what can be checked without a download: the keys, the five domains, that each entry
is a hub id or an existing directory, and for directories that they hold a causal LM of the base's
architecture. Hub models are checked the same way once fetched. Every problem is one line naming the
file and what to do. PyYAML is imported only when a file is read: the catalog itself stays standard
library only.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from mergebench.catalog.domains import DOMAIN_NAMES, unknown
from mergebench.errors import MergeBenchError

SHIPPED = Path(__file__).with_name("families")
KEYS = ("name", "base", "specialists", "multitask")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: config.json fields that must agree between a base and its specialists for a merge to make sense.
ARCHITECTURE_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size",
                       "num_attention_heads", "num_key_value_heads")


@dataclass(frozen=True)
class Family:
    name: str
    base: str
    specialists: dict[str, str]
    multitask: str | None = None
    #: the local directories among the models, with a fingerprint of their files (for stage keys)
    local: dict[str, str] = field(default_factory=dict)

    @property
    def models(self) -> dict[str, str]:
        """role -> hub id or directory: base, each domain, and multitask when there is one."""
        roles = {"base": self.base, **self.specialists}
        return {**roles, "multitask": self.multitask} if self.multitask else roles


def shipped_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in SHIPPED.glob("*.yaml")))


def is_family_file(model: str) -> bool:
    return model.endswith((".yaml", ".yml")) or Path(model).is_file()


def load_family(model: str) -> Family:
    """A shipped family by name (`llama-3.2-3b`), or a family file by path."""
    if is_family_file(model):
        return read_family_file(Path(model))
    path = SHIPPED / f"{model}.yaml"
    if not path.is_file():
        raise unknown("model", model, shipped_names() + ("tiny", "FAMILY.yaml")) from None
    return read_family_file(path)


def read_family_file(path: Path) -> Family:
    import yaml

    if not path.is_file():
        raise MergeBenchError(f"{path}: no such family file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise MergeBenchError(f"{path}: not valid YAML ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise MergeBenchError(f"{path}: a family file is a mapping with the keys {', '.join(KEYS)}")
    unknown_keys = [k for k in data if k not in KEYS]
    if unknown_keys:
        raise MergeBenchError(f"{path}: unknown key {unknown_keys[0]!r} (known: {', '.join(KEYS)})")
    for key in ("name", "base", "specialists"):
        if key not in data:
            raise MergeBenchError(f"{path}: missing key {key!r}")
    name = data["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
        raise MergeBenchError(f"{path}: name {name!r} must be a word of letters, digits, '.', '_' or '-'")
    specialists = data["specialists"]
    if not isinstance(specialists, dict):
        raise MergeBenchError(f"{path}: specialists must map each domain to a model")
    extra = [d for d in specialists if d not in DOMAIN_NAMES]
    if extra:
        raise MergeBenchError(f"{path}: specialists: unknown domain {extra[0]!r} (the domains: "
                              f"{', '.join(DOMAIN_NAMES)})")
    missing = [d for d in DOMAIN_NAMES if d not in specialists]
    if missing:
        raise MergeBenchError(f"{path}: specialists lacks {missing[0]!r} (a family needs all five domains: "
                              f"{', '.join(DOMAIN_NAMES)})")
    roles = {"base": data["base"], **{d: specialists[d] for d in DOMAIN_NAMES}}
    if data.get("multitask") is not None:
        roles["multitask"] = data["multitask"]
    resolved = {role: _resolve(path, role, value) for role, value in roles.items()}
    local = {role: Path(v) for role, v in resolved.items() if Path(v).is_absolute()}
    check_architectures(local, str(path))
    return Family(name, resolved["base"], {d: resolved[d] for d in DOMAIN_NAMES}, resolved.get("multitask"),
                  {role: fingerprint(p) for role, p in local.items()})


def _resolve(path: Path, role: str, value) -> str:
    """A local directory (absolute, or relative to the family file) or a hub id, as written."""
    if not isinstance(value, str) or not value.strip():
        raise MergeBenchError(f"{path}: {role} must be a hub id (owner/name) or a directory, got {value!r}")
    local = (path.parent / value).expanduser()
    if local.is_dir():
        return str(local.resolve())
    if HUB_ID.match(value) and not value.startswith((".", "/", "~")):
        return value
    raise MergeBenchError(f"{path}: {role} {value!r} is neither a directory nor a hub id (owner/name)")


def fingerprint(model_dir: Path) -> str:
    """Names, sizes and modification times of a local model's files: part of the stage keys, so a
    model rewritten in place is fetched, merged and evaluated again."""
    entries = sorted((str(p.relative_to(model_dir)), p.stat().st_size, p.stat().st_mtime_ns)
                     for p in model_dir.rglob("*") if p.is_file())
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def read_config(model_dir: Path, where: str) -> dict:
    config = model_dir / "config.json"
    try:
        data = json.loads(config.read_text())
    except OSError:
        raise MergeBenchError(f"{where}: {model_dir} has no config.json (not a Hugging Face model folder)") from None
    except json.JSONDecodeError:
        raise MergeBenchError(f"{where}: {config} is not valid JSON") from None
    architectures = data.get("architectures") or []
    if not any(str(a).endswith("ForCausalLM") for a in architectures):
        raise MergeBenchError(f"{where}: {model_dir} is not a causal LM (architectures: "
                              f"{', '.join(map(str, architectures)) or 'none'}); MergeBench merges *ForCausalLM models")
    return data


def check_architectures(models: dict[str, Path], where: str) -> None:
    """Every model given is a causal LM, and has the base's architecture when the base is among them
    (a hub base is compared once it is fetched)."""
    configs = {role: read_config(p, where) for role, p in models.items()}
    base = configs.get("base")
    if base is None:
        return
    for role, config in configs.items():
        for key in ARCHITECTURE_FIELDS:
            if config.get(key) != base.get(key):
                raise MergeBenchError(f"{where}: {role} ({models[role]}) has {key}={config.get(key)!r} but the base "
                                      f"has {base.get(key)!r}: specialists must be finetunes of the base")
