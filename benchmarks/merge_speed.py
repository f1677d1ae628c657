"""Merge speed and memory: mergebench's streaming engine against mergekit 0.1.5 and the I/O floor.

    .venv/bin/python benchmarks/merge_speed.py [--sizes 0.5,1.0] [--out benchmarks/out] [--quick]
    .venv/bin/python benchmarks/merge_speed.py --render benchmarks/out/latest.json   (table and targets again)

Inputs are synthetic Llama-shaped bf16 checkpoints (a base and five specialists = base + seeded noise):
speed depends on shapes and bytes, not on what the weights learned, so no download is needed. They are
cached under OUT/models keyed by size. Every merge runs in its own process and is timed end to end
(interpreter start and imports included, as a user sees it); peak RSS comes from the kernel's rusage of
that process. Before each size all inputs are read once, so every run sees the same warm page cache;
`sync` runs (untimed) after each run so one run's writeback does not slow the next. The table goes to
stdout and to OUT/latest.json and OUT/latest.md (OUT/latest-quick.* for --quick).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH_SPEC = "torch==2.13.0"  # the CPU wheel on disk; any other version would pull a multi-GB CUDA build
MERGEKIT_SPEC = "mergekit==0.1.5"
N_SPECIALISTS = 5
VOCAB = 32000
SHARD_PARAMS = 1_000_000_000  # output shards of 1B parameters (2 GB bf16) for both tools
QUICK_SIZE = 0.02

# label -> our CLI arguments. mergekit merges every tensor, so ours does too (--include '*').
OURS = {
    "task_arithmetic": ["--method", "task_arithmetic", "--set", "lambda=0.4"],
    "ties": ["--method", "ties", "--set", "K=0.3", "--set", "lambda=0.4", "--set", "scope=tensor"],
    "ties_global": ["--method", "ties", "--set", "K=0.3", "--set", "lambda=0.4"],
    "dare": ["--method", "dare", "--set", "p=0.9", "--set", "lambda=0.4", "--set", "seed=0"],
}
# label -> (mergekit merge_method, per-model parameters); normalize false everywhere, so the merged
# task vector is 0.4·Σ(sparsified τ), as in ours. mergekit's TIES trims per tensor; it has no global scope.
MERGEKIT = {
    "task_arithmetic": ("task_arithmetic", {"weight": 0.4}),
    "ties": ("ties", {"weight": 0.4, "density": 0.3}),
    "dare": ("dare_linear", {"weight": 0.4, "density": 0.1}),
}


# --- synthetic checkpoints ----------------------------------------------------------------------------
def llama_config(billions: float) -> dict:
    """A LlamaForCausalLM config (untied lm_head, GQA 4:1) whose parameter count is close to `billions`."""
    hidden = 256 if billions < 0.05 else 1024 if billions < 0.5 else 2048 if billions < 3 else 4096
    inter = round(hidden * 2.75 / 256) * 256
    heads = hidden // 64
    kv = max(1, heads // 4)
    per_layer = 2 * hidden * hidden + 2 * hidden * kv * 64 + 3 * hidden * inter + 2 * hidden
    layers = max(1, round((billions * 1e9 - 2 * VOCAB * hidden - hidden) / per_layer))
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
            "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv, "head_dim": 64, "vocab_size": VOCAB, "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}


def llama_tensors(cfg: dict) -> list[tuple[str, tuple[int, ...]]]:
    h, i, kvd = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_key_value_heads"] * cfg["head_dim"]
    out = [("model.embed_tokens.weight", (cfg["vocab_size"], h))]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        out += [(p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.k_proj.weight", (kvd, h)),
                (p + "self_attn.v_proj.weight", (kvd, h)), (p + "self_attn.o_proj.weight", (h, h)),
                (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i)), (p + "input_layernorm.weight", (h,)),
                (p + "post_attention_layernorm.weight", (h,))]
    return out + [("model.norm.weight", (h,)), ("lm_head.weight", (cfg["vocab_size"], h))]


def synth_tensor(name: str, shape: tuple[int, ...], specialist: int):
    """Deterministic from (name, specialist) alone, so each model is written without reading another."""
    import torch

    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    base = torch.randn(shape, generator=gen) * 0.02 + (1.0 if name.endswith("norm.weight") else 0.0)
    base = base.to(torch.bfloat16)
    if specialist == 0:
        return base
    gen.manual_seed(zlib.crc32(f"{specialist}/{name}".encode()))
    return (base.float() + torch.randn(shape, generator=gen) * 0.002).to(torch.bfloat16)


def write_model(out: Path, cfg: dict, specialist: int) -> None:
    """Sharded safetensors plus index, one shard in memory at a time (about a quarter of the model)."""
    from safetensors.torch import save_file

    tensors = llama_tensors(cfg)
    total = sum(2 * math.prod(s) for _, s in tensors)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in tensors:
        nbytes = 2 * math.prod(shape)
        if shards[-1] and size + nbytes > total // 4:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    shutil.rmtree(out, ignore_errors=True)  # an unfinished earlier attempt
    out.mkdir(parents=True)
    weight_map = {}
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {n: synth_tensor(n, s, specialist) for n, s in shard}
        save_file(tensors, out / fname, metadata={"format": "pt"})
        weight_map.update({n: fname for n, _ in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (out / "config.json").write_text(json.dumps(cfg, indent=2))  # last: it marks the model complete


def ensure_models(root: Path, billions: float, specialists: int = N_SPECIALISTS) -> tuple[Path, list[Path], int]:
    """Base and specialists for one size, each generated once; a model is complete once its config.json
    (written last) matches the size's config."""
    cfg = llama_config(billions)
    n_params = sum(math.prod(s) for _, s in llama_tensors(cfg))
    where = root / "models" / f"llama-{billions:g}B"
    names = ["base"] + [f"specialist{t}" for t in range(1, specialists + 1)]

    def complete(model: Path) -> bool:
        config = model / "config.json"
        return config.is_file() and json.loads(config.read_text()) == cfg

    todo = [t for t, name in enumerate(names) if not complete(where / name)]
    if todo:
        need = (len(todo) + 3) * 2 * n_params  # the new models plus outputs, with some room to spare
        free = shutil.disk_usage(root).free
        if free < need:
            sys.exit(f"{root}: {free / 1e9:.1f} GB free, {need / 1e9:.1f} GB needed for {billions:g}B")
        t0 = time.perf_counter()
        for t in todo:
            write_model(where / names[t], cfg, t)
        print(f"generated {len(todo)} x {n_params / 1e9:.3f}B in {time.perf_counter() - t0:.0f} s")
    return where / "base", [where / n for n in names[1:]], n_params


# --- I/O floor ------------------------------------------------------------------------------------------
def shard_header(path: Path) -> tuple[bytes, dict]:
    with open(path, "rb") as f:
        raw = f.read(8)
        raw += f.read(struct.unpack("<Q", raw)[0])
    header = json.loads(raw[8:])
    header.pop("__metadata__", None)
    return raw, header


def io_floor(out: Path, models: list[Path]) -> None:
    """Read every tensor of every model once and write the base's bytes back, in the merge's order.

    This is the least any merge must do (inputs in, a base-sized output out), with no dtype conversion
    and no arithmetic. Our generator gives all models the same shard layout, which this relies on.
    """
    base = models[0]
    out.mkdir(parents=True)
    for path in sorted(base.glob("*.safetensors")):
        raw, header = shard_header(path)
        buf = bytearray(max(e["data_offsets"][1] - e["data_offsets"][0] for e in header.values()))
        start = len(raw)
        with open(out / path.name, "wb") as dst:
            dst.write(raw)
            files = [open(m / path.name, "rb") for m in models]
            try:
                for entry in sorted(header.values(), key=lambda e: e["data_offsets"][0]):
                    lo, hi = entry["data_offsets"]
                    view = memoryview(buf)[: hi - lo]
                    for f in reversed(files):  # the base last, so its bytes are what lands in the output
                        f.seek(start + lo)
                        f.readinto(view)
                    dst.write(view)
            finally:
                for f in files:
                    f.close()
    for name in ("model.safetensors.index.json", "config.json"):  # no index in a single-file model
        if (base / name).is_file():
            shutil.copy(base / name, out)


# --- tools ----------------------------------------------------------------------------------------------
def ensure_mergekit(venv: Path) -> Path:
    """mergekit gets its own venv: its dependencies (peft, datasets, pydantic, ...) stay out of the kit's."""
    exe = venv / "bin" / "mergekit-yaml"
    if not exe.exists():
        print(f"installing {MERGEKIT_SPEC} into {venv}")
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run(pip + [TORCH_SPEC], check=True)  # first, so mergekit's torch requirement is met
        subprocess.run(pip + [MERGEKIT_SPEC], check=True)
    return exe


def merge_cli(method_args: list[str], base: Path, experts: list[Path], out: Path, *extra: str,
              device: str = "cpu") -> list[str]:
    """`mergebench merge` (the kit's default parameter set unless `extra` says otherwise)."""
    cmd = [sys.executable, "-m", "mergebench.cli.main", "merge", *method_args, "--base", str(base),
           "--out", str(out), "--device", device, *extra]
    for e in experts:
        cmd += ["--expert", str(e)]
    return cmd


def ours_cmd(label: str, base: Path, experts: list[Path], out: Path) -> list[str]:
    return merge_cli(OURS[label], base, experts, out, "--include", "*", "--out-dtype", "bfloat16",
                     "--max-shard-size", str(2 * SHARD_PARAMS))


def mergekit_cmd(exe: Path, label: str, base: Path, experts: list[Path], out: Path) -> list[str]:
    """fp32 arithmetic and bf16 output, like ours; no tokenizer or model card, which ours does not write."""
    method, params = MERGEKIT[label]
    config = {"merge_method": method, "base_model": str(base), "dtype": "float32", "out_dtype": "bfloat16",
              "parameters": {"normalize": False},
              "models": [{"model": str(e), "parameters": params} for e in experts]}
    yml = out.parent / f"{out.name}.yml"
    yml.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return [str(exe), str(yml), str(out), "--no-cuda", "--lazy-unpickle", "--no-copy-tokenizer",
            "--no-write-model-card", "--out-shard-size", str(SHARD_PARAMS), "--random-seed", "0", "--quiet"]


# --- measurement ----------------------------------------------------------------------------------------
def measure(cmd: list[str], log: Path) -> dict:
    """Wall and CPU seconds and peak RSS of one process, via GNU time -v, else a rusage wrapper.

    CPU seconds (user + system) are reported too: on a shared machine they vary less than wall time.
    """
    gnu_time = Path("/usr/bin/time")
    if gnu_time.exists():
        wrapped = [str(gnu_time), "-v", *cmd]
    else:
        wrapped = [sys.executable, __file__, "--rusage", *cmd]
    load = os.getloadavg()[0]  # other work on the machine shows up here, and in the timings
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(wrapped, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    seconds = time.perf_counter() - t0
    subprocess.run(["sync"], check=False)
    text = log.read_text(errors="replace")
    found = re.findall(r"Maximum resident set size \(kbytes\): (\d+)", text)
    rss = int(found[-1]) / 1024 if found else None
    cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", text)[-2:])
    return {"ok": rc == 0, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "peak_rss_mib": round(rss) if rss else None, "load_before": round(load, 2)}


def rusage_wrapper(cmd: list[str]) -> int:
    """Stand-in for GNU time: this fresh process's only child is `cmd`, so RUSAGE_CHILDREN is its own."""
    import resource

    rc = subprocess.run(cmd).returncode
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"User time (seconds): {use.ru_utime:.2f}\nSystem time (seconds): {use.ru_stime:.2f}\n"
          f"Maximum resident set size (kbytes): {use.ru_maxrss}", file=sys.stderr)
    return rc


def warm_up(models: list[Path], mergekit: Path) -> float:
    """Flush pending writes (fresh inputs), read every input byte once, and load both tools' code once, so
    that every timed run starts from the same warm page cache."""
    t0 = time.perf_counter()
    read_once([p for m in models for p in m.glob("*.safetensors")])
    subprocess.run([str(mergekit), "--help"], check=True, capture_output=True)
    return time.perf_counter() - t0


def read_files(files: list[Path]) -> None:
    buf = bytearray(64 << 20)
    for path in files:
        with open(path, "rb") as f:
            while f.readinto(buf):
                pass


def read_once(files: list[Path]) -> None:
    """Flush pending writes, read `files` into the page cache, and import the kit's code once."""
    subprocess.run(["sync"], check=False)
    read_files(files)
    subprocess.run([sys.executable, "-c", "import mergebench.cli.main, mergebench.merging.engine"],
                   check=True)


def best(runs: list[dict]) -> dict:
    ok = [r for r in runs if r["ok"]]
    return min(ok, key=lambda r: r["seconds"]) if ok else runs[0]


def bench_size(root: Path, billions: float, mergekit: Path, repeat: int) -> dict:
    """Every job once per round, rounds repeated: a burst of other load then hits all tools alike."""
    base, experts, n_params = ensure_models(root, billions)
    print(f"\n== {billions:g}B ({n_params / 1e9:.3f}B parameters): warm-up "
          f"{warm_up([base, *experts], mergekit):.1f} s")
    scratch, logs = root / "scratch", root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    models = [str(base), *map(str, experts)]
    jobs = {"io/floor": lambda out: [sys.executable, __file__, "--io-floor", str(out), *models]}
    jobs |= {f"ours/{m}": lambda out, m=m: ours_cmd(m, base, experts, out) for m in OURS}
    jobs |= {f"mergekit/{m}": lambda out, m=m: mergekit_cmd(mergekit, m, base, experts, out)
             for m in MERGEKIT}
    runs: dict[str, list[dict]] = {key: [] for key in jobs}
    for k in range(repeat):
        for key, make in jobs.items():
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            r = measure(make(scratch / "merged"), logs / f"{billions:g}B-{key.replace('/', '-')}-{k}.log")
            runs[key].append(r)
            print(f"  {key:26} {r['seconds']:8.1f} s {r['cpu_seconds']:8.1f} cpu-s "
                  f"{r['peak_rss_mib'] or 0:6} MiB  load {r['load_before']:.1f}"
                  + ("" if r["ok"] else f"  FAILED, see {logs}"))
    shutil.rmtree(scratch, ignore_errors=True)
    return {"billions": billions, "params": n_params, "runs": {key: best(rs) for key, rs in runs.items()},
            "all_runs": runs}


# --- report ---------------------------------------------------------------------------------------------
HEAD = ["size", "method", "ours s", "mergekit s", "speedup", "ours MiB", "mergekit MiB", "I/O floor s",
        "ours cpu-s", "mergekit cpu-s"]


def rows(results: list[dict]) -> tuple[list[list[str]], list[str]]:
    """Table rows, plus notes: the TIES global/per-tensor ratio and the machine load during the runs."""

    def cell(r: dict | None, key: str, fmt: str) -> str:
        return "-" if not r or not r["ok"] or r[key] is None else format(r[key], fmt)

    body, notes = [], []
    for res in results:
        runs, size = res["runs"], f"{res['billions']:g}B"
        for label in OURS:
            ours, mk = runs[f"ours/{label}"], runs.get(f"mergekit/{label}")
            speedup = f"{mk['seconds'] / ours['seconds']:.2f}x" if mk and mk["ok"] and ours["ok"] else "-"
            name = {"ties": "ties (per-tensor)", "ties_global": "ties (global)"}.get(label, label)
            body.append([size, name, cell(ours, "seconds", ".1f"), cell(mk, "seconds", ".1f"), speedup,
                         cell(ours, "peak_rss_mib", "d"), cell(mk, "peak_rss_mib", "d"),
                         cell(runs["io/floor"], "seconds", ".1f"), cell(ours, "cpu_seconds", ".1f"),
                         cell(mk, "cpu_seconds", ".1f")])
        g, t = runs["ours/ties_global"], runs["ours/ties"]
        if g["ok"] and t["ok"]:
            notes.append(f"{size}: ours TIES global / per-tensor = {g['seconds'] / t['seconds']:.2f}x wall, "
                         f"{g['cpu_seconds'] / t['cpu_seconds']:.2f}x cpu")
        notes += targets(res)
        loads = [r["load_before"] for rs in res["all_runs"].values() for r in rs]
        notes.append(f"{size}: 1-min load average before runs {min(loads):.1f} to {max(loads):.1f} "
                     f"({os.cpu_count()} CPUs); fastest of {len(next(iter(res['all_runs'].values())))} kept")
    if len(results) > 1:
        notes += flat_memory(results)
    return body, notes


#: The issue's targets (ratios measured in one run): (label, what, ours key, against, at most)
TARGETS = [("task arithmetic", "within 1.5x of the I/O floor", "ours/task_arithmetic", "io/floor", 1.5),
           ("TIES (global)", "within 3x of the I/O floor", "ours/ties_global", "io/floor", 3.0)]
SPEEDUPS = [("TIES (global)", "at least 4x faster than mergekit's TIES", "ours/ties_global", "mergekit/ties", 4.0),
            ("DARE", "at least 3x faster than mergekit", "ours/dare", "mergekit/dare", 3.0)]


def targets(res: dict) -> list[str]:
    """One line per target at this size: the measured ratio and whether it is met."""
    runs, size, out = res["runs"], f"{res['billions']:g}B", []

    def ok(*keys: str) -> bool:
        return all(runs.get(k) and runs[k]["ok"] for k in keys)

    for label, what, ours, other, most in TARGETS:
        if ok(ours, other):
            ratio = runs[ours]["seconds"] / runs[other]["seconds"]
            out.append(f"{size} target {label} {what}: {ratio:.2f}x, {'met' if ratio <= most else 'NOT met'}")
    for label, what, ours, other, least in SPEEDUPS:
        if ok(ours, other):
            ratio = runs[other]["seconds"] / runs[ours]["seconds"]
            out.append(f"{size} target {label} {what}: {ratio:.2f}x, {'met' if ratio >= least else 'NOT met'}")
    higher = [m for m in MERGEKIT if ok(f"ours/{m}", f"mergekit/{m}")
              and runs[f"ours/{m}"]["peak_rss_mib"] > runs[f"mergekit/{m}"]["peak_rss_mib"]]
    out.append(f"{size} target peak memory no higher than mergekit's: "
               + ("met" if not higher else f"NOT met ({', '.join(higher)})"))
    return out


def flat_memory(results: list[dict]) -> list[str]:
    """Peak memory from the smallest size to the largest, per method: flat means within 25%."""
    small, large = results[0], results[-1]
    out = []
    for label in OURS:
        a, b = small["runs"][f"ours/{label}"], large["runs"][f"ours/{label}"]
        if a["ok"] and b["ok"] and a["peak_rss_mib"] and b["peak_rss_mib"]:
            growth = b["peak_rss_mib"] / a["peak_rss_mib"]
            out.append(f"target flat peak memory {small['billions']:g}B -> {large['billions']:g}B, {label}: "
                       f"{a['peak_rss_mib']} -> {b['peak_rss_mib']} MiB ({growth:.2f}x), "
                       f"{'met' if growth <= 1.25 else 'NOT met'}")
    return out


def render(body: list[list[str]], markdown: bool, head: list[str] = HEAD) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    return "\n".join("  ".join(x.rjust(w) for x, w in zip(r, widths, strict=True)) for r in [head, *body])


def environment(mergekit: Path) -> dict:
    probe = "import importlib.metadata as m; print(m.version('mergekit'), m.version('torch'))"
    versions = subprocess.run([str(mergekit.parent / "python"), "-c", probe], capture_output=True, text=True)
    mk, mk_torch = (versions.stdout.split() + ["?", "?"])[:2]
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "torch": importlib.metadata.version("torch"), "mergekit": mk, "mergekit_torch": mk_torch,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_report(root: Path, name: str, command: str, env: dict, results: list[dict]) -> None:
    """Print the table and write it as NAME.json (with every run) and NAME.md (a snippet for docs)."""
    body, notes = rows(results)
    warm = ("before each size every input byte was read once (warm page cache for all runs); times are "
            "whole processes, start-up included")
    print("\n" + render(body, markdown=False) + "\n" + "\n".join(notes) + f"\n({warm})")
    report = {"command": command, "env": env, "results": results,
              "table": [dict(zip(HEAD, r, strict=True)) for r in body], "notes": notes}
    (root / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    md = [f"Merge speed, {env['cpus']} CPUs, torch {env['torch']}, mergekit {env['mergekit']} "
          f"({env['date']}, `{command}`)", "", render(body, markdown=True), "",
          *[f"- {n}" for n in notes], f"- {warm}"]
    (root / f"{name}.md").write_text("\n".join(md) + "\n")
    print(f"wrote {root / name}.json and .md")


def lock(root: Path):
    """One run per output folder: two would share the scratch output and skew each other's timings."""
    import fcntl

    handle = open(root / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"{root}: another benchmark run is using this folder; wait for it to finish")
    return handle


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--rusage"]:
        return rusage_wrapper(argv[1:])
    if argv[:1] == ["--render"]:  # the table and targets of an earlier run again (latest.json), as now computed
        report = json.loads(Path(argv[1]).read_text())
        write_report(Path(argv[1]).parent, Path(argv[1]).stem, report["command"], report["env"], report["results"])
        return 0
    if argv[:1] == ["--io-floor"]:
        io_floor(Path(argv[1]), [Path(p) for p in argv[2:]])
        return 0
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up live when redirected to a file
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="0.5,1.0", help="sizes in billions of parameters, comma separated")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out", help="cache and results folder")
    ap.add_argument("--quick", action="store_true", help=f"one tiny size ({QUICK_SIZE}B): a smoke test")
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement; the fastest is kept")
    args = ap.parse_args(argv)
    sizes = [QUICK_SIZE] if args.quick else [float(x) for x in args.sizes.split(",")]
    root = args.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    _held = lock(root)  # released when this process exits
    mergekit = ensure_mergekit(root / "mergekit-venv")
    results = [bench_size(root, b, mergekit, args.repeat) for b in sizes]

    command = " ".join(["python", "benchmarks/merge_speed.py", *argv])
    # A smoke test must not overwrite the last real measurement.
    write_report(root, "latest-quick" if args.quick else "latest", command, environment(mergekit), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
