"""The HPC config: how stages become Slurm jobs on one cluster (one small YAML file per site).

    partition: gpu            # sbatch --partition (omit: the cluster's default)
    account: proj123          # sbatch --account (omit: none)
    time:                     # sbatch --time per stage kind; `default` for the others
      default: "02:00:00"
      merge: "01:00:00"
      eval: "08:00:00"
    gpus: 1                   # GPUs per GPU stage (omit: the stage's own need, 1 for MergeBench models)
    gpu_flag: gres            # gres: --gres=gpu:N (any Slurm) | gpus: --gpus=N (Slurm >= 19.05 with cons_tres)
    cpus: 8                   # --cpus-per-task: a number, or per kind like `time`
    mem: 64G                  # --mem: a Slurm size, or per kind like `time`
    extra_sbatch_args: ["--qos=normal"]
    container: apptainer      # apptainer: every job runs the stage in <sif_dir>/<image>.sif (the default)
                              # local: every job runs `<python> -m mergebench.cli.main stage run` natively
    sif_dir: /shared/sif      # where <image>.sif files are (default: ./sif)
    binds: [/scratch]         # extra apptainer --bind paths (the workspace and its caches always are)
    python: /path/to/venv/bin/python   # local container mode only (default: the python running mergebench)
    array_kinds: [eval]       # stages of these kinds waiting on the same jobs go out as one job array
                              # ([] submits every stage as a job of its own)

Every field is optional; a malformed file or field is a one-line error naming both.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergebench.errors import MergeBenchError
from mergebench.stage_kinds import CATEGORY

ENV_VAR = "MERGEBENCH_HPC_CONFIG"
DEFAULT_FILE = "hpc.yaml"
CONTAINERS = ("apptainer", "local")
GPU_FLAGS = ("gres", "gpus")
PER_KIND = ("time", "cpus", "mem")
FIELDS = ("partition", "account", "time", "gpus", "gpu_flag", "cpus", "mem", "extra_sbatch_args", "container",
          "sif_dir", "binds", "python", "array_kinds")
# Slurm's --time forms: minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S
TIME_RE = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2}|UNLIMITED)$")
MEM_RE = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)


@dataclass
class HpcConfig:
    partition: str | None = None
    account: str | None = None
    time: dict[str, str] = field(default_factory=dict)  # stage kind (or "default") -> Slurm time
    gpus: int | None = None
    gpu_flag: str = "gres"
    cpus: dict[str, int] = field(default_factory=dict)
    mem: dict[str, str] = field(default_factory=dict)
    extra_sbatch_args: list[str] = field(default_factory=list)
    container: str = "apptainer"
    sif_dir: Path = Path("sif")
    binds: list[str] = field(default_factory=list)
    python: str = sys.executable
    array_kinds: list[str] = field(default_factory=lambda: ["eval"])
    source: str = "(defaults)"

    def for_kind(self, what: str, kind: str):
        values = getattr(self, what)
        return values.get(kind, values.get("default"))

    def stage_gpus(self, stage_gpus: int) -> int:
        """GPUs a job asks for: none for CPU stages, the configured count (or the stage's own) otherwise."""
        if not stage_gpus:
            return 0
        return self.gpus if self.gpus is not None else stage_gpus


def _fail(source: str, name: str, problem: str) -> MergeBenchError:
    return MergeBenchError(f"{source}: field {name!r} {problem}; fix it (see docs/hpc.md for an example config)")


def _per_kind(source: str, name: str, value: Any, check) -> dict:
    items = value.items() if isinstance(value, dict) else [("default", value)]
    out = {}
    for kind, v in items:
        label = name if not isinstance(value, dict) else f"{name}.{kind}"
        out[str(kind)] = check(label, v)
    return out


def parse_config(data: Any, source: str = "(inline)") -> HpcConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MergeBenchError(f"{source}: expected a mapping of fields ({', '.join(FIELDS)}), got "
                              f"{type(data).__name__}; fix it (see docs/hpc.md for an example config)")
    unknown = [k for k in data if k not in FIELDS]
    if unknown:
        raise _fail(source, str(unknown[0]), f"is not a known field (known: {', '.join(FIELDS)})")
    cfg = HpcConfig(source=source)

    def text(label, v):
        if not isinstance(v, (str, int)) or isinstance(v, bool) or str(v).strip() == "":
            raise _fail(source, label, f"must be a non-empty string, got {v!r}")
        return str(v)

    def time_value(label, v):
        v = text(label, v)
        if not TIME_RE.match(v):
            raise _fail(source, label, f"must be a Slurm time such as 90, 02:00:00 or 1-12:00:00, got {v!r}")
        return v

    def positive_int(label, v):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise _fail(source, label, f"must be a whole number of at least 1, got {v!r}")
        return v

    def mem_value(label, v):
        v = text(label, v)
        if not MEM_RE.match(v):
            raise _fail(source, label, f"must be a Slurm memory size such as 64G or 16000M, got {v!r}")
        return v

    def string_list(label, v):
        if isinstance(v, str) or not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise _fail(source, label, f"must be a list of strings, got {v!r}")
        return list(v)

    for name in ("partition", "account"):
        if data.get(name) is not None:
            setattr(cfg, name, text(name, data[name]))
    if data.get("time") is not None:
        cfg.time = _per_kind(source, "time", data["time"], time_value)
    if data.get("cpus") is not None:
        cfg.cpus = _per_kind(source, "cpus", data["cpus"], positive_int)
    if data.get("mem") is not None:
        cfg.mem = _per_kind(source, "mem", data["mem"], mem_value)
    if data.get("gpus") is not None:
        cfg.gpus = positive_int("gpus", data["gpus"])
    if data.get("gpu_flag") is not None:
        if data["gpu_flag"] not in GPU_FLAGS:
            raise _fail(source, "gpu_flag", f"must be one of {', '.join(GPU_FLAGS)}, got {data['gpu_flag']!r}")
        cfg.gpu_flag = data["gpu_flag"]
    if data.get("container") is not None:
        if data["container"] not in CONTAINERS:
            raise _fail(source, "container", f"must be one of {', '.join(CONTAINERS)}, got {data['container']!r}")
        cfg.container = data["container"]
    if data.get("extra_sbatch_args") is not None:
        cfg.extra_sbatch_args = string_list("extra_sbatch_args", data["extra_sbatch_args"])
    if data.get("binds") is not None:
        cfg.binds = string_list("binds", data["binds"])
    if data.get("sif_dir") is not None:
        cfg.sif_dir = Path(text("sif_dir", data["sif_dir"])).expanduser()
    if data.get("array_kinds") is not None:
        cfg.array_kinds = string_list("array_kinds", data["array_kinds"])
        unknown_kinds = [k for k in cfg.array_kinds if k not in CATEGORY]
        if unknown_kinds:
            raise _fail(source, "array_kinds", f"names an unknown stage kind {unknown_kinds[0]!r} (known: "
                        f"{', '.join(CATEGORY)})")
    if data.get("python") is not None:
        cfg.python = text("python", data["python"])
    return cfg


def load_config(path: str | os.PathLike | None = None) -> HpcConfig:
    """The config at `path`, else $MERGEBENCH_HPC_CONFIG, else ./hpc.yaml when present, else defaults."""
    import yaml

    explicit = path or os.environ.get(ENV_VAR)
    if explicit is None:
        if not Path(DEFAULT_FILE).is_file():
            return HpcConfig()
        explicit = DEFAULT_FILE
    p = Path(explicit).expanduser()
    try:
        text = p.read_text()
    except OSError as e:
        raise MergeBenchError(f"{p}: cannot read the HPC config ({e.strerror}); pass an existing file with "
                              f"--hpc-config FILE (or set {ENV_VAR})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise MergeBenchError(f"{p}: not valid YAML{where} ({getattr(e, 'problem', None) or e}); fix it (see "
                              "docs/hpc.md for an example config)") from None
    return parse_config(data, str(p))
