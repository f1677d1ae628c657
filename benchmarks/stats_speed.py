"""Statistics pass and data-dependent merge: throughput and peak memory, against what they must cost anyway.

    .venv/bin/python benchmarks/stats_speed.py [--sizes tiny,1.0] [--samples 4] [--merge-layers 4] [--device cpu]
                                               [--quick] [--from-json OUT/stats-latest.json]

Sizes: `tiny` is the tiny family (built with the tiny builder under OUT/tiny-family/KEY, or reused from
./workspace or ./tiny-family when built with the current configuration); a number is a synthetic Llama-shaped bf16 model of that many billion
parameters and its specialists, random init, shared with merge_speed.py's cache (OUT/models), plus a
tokenizer and validation JSONL made locally (random words; every sample is cut at --max-length).

Measured, each in its own process timed end to end, peak RSS from the kernel's rusage of that process:
- the statistics passes `mergebench stats --kind gram|fisher` on the first specialist, in tokens/s of
  the pass itself (timed inside the process, model loading excluded), next to a baseline on the same
  tokens in the same run: a plain forward pass (no hooks, same batches) for gram, a plain per-sample
  forward+backward (no accumulation) for fisher. Their ratio is what the statistics cost on top of the
  model's own compute;
- the merge step of RegMean (Grams of every specialist given) and RegMean++ (its own data pass; the tiny
  family and synthetic sizes up to --pp-max-size) against the I/O floor (every input, Grams included,
  read once and a base-sized output written) and against task arithmetic on the same checkpoints; next
  to its peak RSS, the fp32 size of what one decoder layer's merge combines (the specialists' Grams and
  the base's and specialists' weights of its linears) and of the same over all layers, which a merge
  holding the whole model would need. Synthetic models merge only their first --merge-layers decoder
  layers (4 by default; all layers have the same shapes), which keeps a 1B run near ten minutes.

`--device cuda` runs the passes and the merges on a GPU (untested: no GPU was at hand when this was
written) and adds the device's peak allocation. The tables go to stdout, OUT/stats-latest.{json,md} and
benchmarks/STATS_RESULTS.md (OUT/stats-latest-quick.* only for --quick).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import random
import re
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import merge_speed as ms  # noqa: E402 - the sibling benchmark's checkpoints, I/O floor and measurement

ROOT = ms.ROOT
TINY = "tiny"
TINY_MAX_LENGTH = 128  # the tiny family's max_position_embeddings
TINY_SAMPLES = 50  # every row of a tiny domain's validation split, for every pass (they take milliseconds)
QUICK = {"sizes": "0.02", "samples": 8, "fisher_samples": 4, "merge_samples": 4, "max_length": 128, "merge_layers": 0}
RESULT = "BENCH_RESULT "  # the line a child process reports its pass timing on
MIB = 2**20
TEMPLATE = "alpaca"  # the synthetic models' prompt template (MergeBench's)


@dataclass
class Subject:
    """One family under test: a base, its specialists, and each specialist's validation JSONL."""

    label: str
    base: Path
    experts: list[Path]
    data: list[Path]
    template: str
    max_length: int
    params: int
    billions: float = 0.0  # 0 for the tiny family
    samples: int | None = None  # every pass's sample count, overriding the options (the tiny family)
    notes: list[str] = field(default_factory=list)


# --- the tiny family ------------------------------------------------------------------------------------
def tiny_subject(cache: Path) -> Subject:
    """The tiny family's base and five specialists: a complete family of the current configuration under
    ./workspace or ./tiny-family is reused, else the missing parts are built under `cache`/KEY (about two
    minutes on two cores); families of other configurations there are removed."""
    from mergebench.tiny.build import DOMAINS, FamilyConfig, build_family

    cfg = FamilyConfig()
    candidates = [*sorted((ROOT / "workspace" / "models").glob("*")), ROOT / "tiny-family"]
    family = next((c for c in candidates if _family_key(c) == cfg.key()), None)
    if family is None:
        family = cache / cfg.key()
        for old in cache.glob("*"):
            if old != family:
                shutil.rmtree(old)
        if not all((family / d / "config.json").is_file() for d in ("base", *DOMAINS)):
            print(f"building the tiny family's base and specialists in {family}")
        build_family(family, cfg, models=("base", *DOMAINS))
    experts = [family / d for d in DOMAINS]
    params = _param_count(family / "base")
    return Subject("tiny family", family / "base", experts, [family / "data" / d / "validation.jsonl" for d in DOMAINS],
                   cfg.specialist_recipe.template, TINY_MAX_LENGTH, params, samples=TINY_SAMPLES)


def _family_key(path: Path) -> str | None:
    """The family's config key: in its own manifest, or in the pipeline stage's that replaces it."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        return manifest.get("config_key") or manifest.get("family_config")
    except (OSError, ValueError, AttributeError):
        return None


def _param_count(model: Path) -> int:
    return sum(math.prod(e["shape"]) for f in model.glob("*.safetensors") for e in ms.shard_header(f)[1].values())


# --- synthetic models -----------------------------------------------------------------------------------
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "po", "qua", "shi", "dor", "fen", "gul")


def random_text(rng: random.Random, words: int) -> str:
    return " ".join("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(words))


def prepare_synthetic(base: Path, experts: list[Path], rows: int, max_length: int, label: str) -> Subject:
    """A tokenizer in every model directory (the stats pass and RegMean++ load it from there) and one
    validation file of `rows` samples, each at least `max_length` tokens long (cut there)."""
    from mergebench.catalog.prompts import format_prompt
    from mergebench.tiny.tokenizer import save_tokenizer, train_tokenizer

    where = base.parent
    tok_dir = where / "tokenizer"
    if not (tok_dir / "tokenizer_config.json").is_file():  # trained with the template, which becomes a few tokens
        rng = random.Random(0)
        texts = [format_prompt(random_text(rng, 4), TEMPLATE) + random_text(rng, 50) for _ in range(400)]
        save_tokenizer(train_tokenizer(texts, 512), tok_dir)
    for model in (base, *experts):
        for f in tok_dir.iterdir():
            if not (model / f.name).is_file():
                shutil.copy(f, model / f.name)
    data = where / f"validation-{rows}x{max_length}.jsonl"
    if not data.is_file():
        rng = random.Random(1)
        prompt_words = max(2, max_length // 32)  # the response must survive the cut at max_length
        lines = [json.dumps({"prompt": random_text(rng, prompt_words), "response": random_text(rng, max_length)})
                 for _ in range(rows)]
        data.write_text("\n".join(lines) + "\n")
    params = _param_count(base)
    return Subject(label, base, experts, [data] * len(experts), TEMPLATE, max_length, params)


def synthetic_subject(models_root: Path, billions: float, specialists: int, rows: int, max_length: int) -> Subject:
    base, experts, _ = ms.ensure_models(models_root, billions, specialists)
    subject = prepare_synthetic(base, experts, rows, max_length, f"{billions:g}B synthetic")
    subject.billions = billions
    return subject


# --- the child processes: a timed statistics pass, its baseline, the I/O floor -------------------------
def has_response(example) -> bool:
    """Whether the Fisher pass uses this sample: a next-token target after the prompt is left."""
    from mergebench.tokens import IGNORE

    return any(label != IGNORE for label in example.labels[1:])


class NullCollector:
    """GramCollector's interface without its hooks: the Gram pass's exact loop, minus the statistics."""

    def __init__(self, linears: dict) -> None:
        self.grams: dict = {}
        self.aliases: dict = {}
        self.mask = None

    def end_pass(self) -> None:
        pass

    def remove(self) -> None:
        pass


def forward_backward(model, encoded) -> None:
    """fisher_pass without the Fisher: the same per-sample forward, loss and backward, nothing accumulated."""
    import torch

    from mergebench.tokens import response_nll

    device = next(model.parameters()).device
    for example in encoded:
        if not has_response(example):
            continue
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=torch.tensor([example.input_ids], device=device), use_cache=False).logits[0]
        response_nll(logits, torch.tensor(example.labels, device=device), reduction="mean").backward()
    model.zero_grad(set_to_none=True)


def child(mode: str, argv: list[str]) -> dict:
    """Run `mergebench stats ARGV` (mode stats) or its baseline (forward, forward+backward) on the same
    arguments, timing the pass itself; prints and returns {pass_seconds, tokens[, device_peak_bytes]}."""
    import torch

    from mergebench.merging.datapass import stats

    record: dict = {}

    def timed(fn, tokens):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            record.update(pass_seconds=time.perf_counter() - t0, tokens=tokens(args, out))
            return out
        return wrapper

    def gram_tokens(args, out):
        return out[2]

    def fisher_tokens(args, out):
        return sum(len(e.input_ids) for e in args[1] if has_response(e))

    saved = stats.gram_pass, stats.fisher_pass, stats.GramCollector
    try:
        if mode == "stats":
            from mergebench.cli.main import main as cli

            stats.gram_pass, stats.fisher_pass = timed(stats.gram_pass, gram_tokens), timed(stats.fisher_pass,
                                                                                            fisher_tokens)
            cli.main(["stats", *argv], prog_name="mergebench", standalone_mode=False)
        else:
            model, encoded, pad, batch_size = baseline_inputs(argv)
            if mode == "forward":
                stats.GramCollector = NullCollector
                timed(stats.gram_pass, gram_tokens)(model, encoded, pad, None, batch_size)
            else:
                timed(forward_backward, fisher_tokens)(model, encoded)
    finally:
        stats.gram_pass, stats.fisher_pass, stats.GramCollector = saved
    if torch.cuda.is_available():
        record["device_peak_bytes"] = torch.cuda.max_memory_allocated()
    print(RESULT + json.dumps(record), flush=True)
    return record


def baseline_inputs(argv: list[str]):
    """The model, encoded samples, pad id and batch size exactly as compute_stats prepares them."""
    from mergebench.merging.datapass import stats
    from mergebench.merging.datapass.samples import load_samples

    ap = argparse.ArgumentParser()
    for opt in ("--model", "--data", "--tokenizer", "--template"):
        ap.add_argument(opt)
    for opt, default in (("--samples", 1000), ("--max-length", 2048), ("--batch-size", 8), ("--seed", 0)):
        ap.add_argument(opt, type=int, default=default)
    ap.add_argument("--device", default="auto")
    a, _ = ap.parse_known_args(argv)
    samples = load_samples(a.data, a.samples, a.seed, None, a.template or "alpaca")
    tokenizer = stats.load_tokenizer(a.tokenizer or a.model)
    encoded = [stats.encode_sample(tokenizer, s, a.max_length) for s in samples]
    pad = stats.pad_token_id(tokenizer)
    return stats.load_model(Path(a.model), stats.resolve_device(a.device)), encoded, pad, a.batch_size


def io_floor(argv: list[str]) -> None:
    """merge_speed's I/O floor over the models, then every statistics file read once: `OUT M... -- F...`."""
    cut = argv.index("--")
    ms.io_floor(Path(argv[0]), [Path(p) for p in argv[1:cut]])
    ms.read_files([Path(p) for p in argv[cut + 1:]])


# --- measurement ----------------------------------------------------------------------------------------
def run(cmd: list[str], log: Path) -> dict:
    """ms.measure, plus what the child reported on its BENCH_RESULT line (if any)."""
    r = ms.measure(cmd, log)
    found = [line for line in log.read_text(errors="replace").splitlines() if line.startswith(RESULT)]
    if found:
        r.update(json.loads(found[-1][len(RESULT):]))
    if not r["ok"]:
        r["log"] = str(log)
    return r


def child_cmd(mode: str, args: list[str]) -> list[str]:
    return [sys.executable, __file__, "--child", mode, *args]


def stats_args(s: Subject, t: int, kind: str, samples: int, out: Path, device: str, batch_size: int) -> list[str]:
    return ["--kind", kind, "--model", str(s.experts[t]), "--data", str(s.data[t]), "--samples", str(samples),
            "--out", str(out), "--max-length", str(s.max_length), "--batch-size", str(batch_size),
            "--template", s.template, "--device", device, "--force"]


def mem_available() -> int:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return 1 << 62
    return int(re.search(r"MemAvailable:\s+(\d+)", text).group(1)) * 1024


def working_sets(base: Path, grams: Path, experts: int) -> tuple[int, int]:
    """fp32 bytes that RegMean combines for its largest decoder layer, and for all layers: every
    specialist's distinct Grams plus the base's and the specialists' weights of the layer's linears."""
    _, header = ms.shard_header(grams / "grams.safetensors")
    aliases = json.loads((grams / "stats_manifest.json").read_text()).get("aliases") or {}
    weights = {}
    for f in base.glob("*.safetensors"):
        weights.update(ms.shard_header(f)[1])
    per_layer: dict[str, int] = defaultdict(int)

    def layer(name: str) -> str:
        return re.search(r"\.layers\.(\d+)\.", name).group(1)

    for name, entry in header.items():
        per_layer[layer(name)] += experts * 4 * math.prod(entry["shape"])
    for name in [*header, *aliases]:
        per_layer[layer(name)] += (experts + 1) * 4 * math.prod(weights[name]["shape"])
    return max(per_layer.values()), sum(per_layer.values())


def merged_layers(s: Subject, args) -> int | None:
    """How many decoder layers the synthetic models' merges cover when --merge-layers cuts them (else None)."""
    layers = json.loads((s.base / "config.json").read_text())["num_hidden_layers"]
    return args.merge_layers if s.billions and 0 < args.merge_layers < layers else None


def merge_jobs(s: Subject, grams: list[Path], args) -> dict[str, list[str]]:
    """Method arguments of each timed merge (outputs in the base's dtype, the default parameter set or its
    first --merge-layers decoder layers)."""
    cut = merged_layers(s, args)
    include = [x for n in range(cut or 0) for x in ("--include", f"model.layers.{n}.*")]
    jobs = {"task_arithmetic": ["--method", "task_arithmetic", "--set", "lambda=0.4", *include],
            "regmean": ["--method", "regmean", *[x for g in grams for x in ("--stats", str(g))], *include]}
    if not s.billions or s.billions <= args.pp_max_size and not cut:
        jobs["regmean_pp"] = ["--method", "regmean_pp", *[x for d in s.data for x in ("--data", str(d))],
                              "--set", f"samples={s.samples or args.merge_samples}", "--set", f"max_length={s.max_length}",
                              "--set", f"template={s.template}"]
    return jobs


def bench_subject(s: Subject, work: Path, args) -> dict:
    """Statistics passes on the first specialist, then the merge step over all specialists."""
    logs, scratch = work / "logs", work / "scratch"
    logs.mkdir(parents=True, exist_ok=True)
    tag = s.label.split()[0]
    model_files = [f for m in (s.base, *s.experts) for f in m.glob("*.safetensors")]
    ms.read_once(model_files)
    T = len(s.experts)
    print(f"\n== {s.label}: {count(s.params)} parameters, {T} specialists, samples of at most "
          f"{s.max_length} tokens, device {args.device}")
    runs: dict[str, dict] = {}
    result = {"label": s.label, "params": s.params, "specialists": T, "max_length": s.max_length, "runs": runs,
              "notes": s.notes, "merged_layers": merged_layers(s, args),
              "layers": json.loads((s.base / "config.json").read_text())["num_hidden_layers"]}

    def step(key: str, cmd: list[str], k: int = 0) -> dict:
        """Run and keep the measurement; on a repeat (k > 0) keep the run with the fastest pass."""
        r = run(cmd, logs / f"{tag}-{key.replace('/', '-').replace('+', '')}{f'-{k}' if k else ''}.log")
        kept = runs.get(key)
        if not kept or not kept["ok"] or r["ok"] and r.get("pass_seconds", 0) < kept.get("pass_seconds", 0):
            runs[key] = r
        rate = f"{r['tokens'] / r['pass_seconds']:9.0f} tok/s" if r.get("tokens") else " " * 15
        print(f"  {key:26} {r['seconds']:8.1f} s {r['cpu_seconds']:8.1f} cpu-s {r['peak_rss_mib'] or 0:6} MiB "
              f"{rate}  load {r['load_before']:.1f}" + ("" if r["ok"] else f"  FAILED, see {r['log']}"))
        return r

    grams = [scratch / f"grams-{t}" for t in range(T)]
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    counts = {k: s.samples or getattr(args, k) for k in ("samples", "fisher_samples", "merge_samples")}
    result["samples"] = counts
    for kind, baseline, n in (("gram", "forward", counts["samples"]),
                              ("fisher", "forward+backward", counts["fisher_samples"])):
        need = 16 * s.params  # fp32 model, gradients, accumulators and the copy save_file makes
        if kind == "fisher" and args.device == "cpu" and mem_available() < need:
            s.notes.append(f"fisher skipped: {mem_available() / 2**30:.1f} GiB available, about "
                           f"{need / 2**30:.1f} GiB needed")
            continue
        out = grams[0] if kind == "gram" else scratch / "fisher"
        a = stats_args(s, 0, kind, n, out, args.device, args.batch_size)
        for k in range(args.repeat):  # alternating, so a burst of other load hits both alike
            step(f"stats/{kind}", child_cmd("stats", a), k)
            step(f"baseline/{baseline}", child_cmd(baseline, a), k)
        if kind == "fisher":
            shutil.rmtree(out, ignore_errors=True)
    for t in range(1, T):  # the other specialists' Grams, for the merge only (fewer samples: same shapes)
        step(f"grams/{t}", child_cmd("stats", stats_args(s, t, "gram", counts["merge_samples"], grams[t], args.device,
                                                          args.batch_size)))
    if not all(r["ok"] for r in runs.values()):
        return result
    gram_files = [g / "grams.safetensors" for g in grams]
    ms.read_once(model_files + gram_files)
    merged = scratch / "merged"
    floor = [sys.executable, __file__, "--io-floor", str(merged), *map(str, (s.base, *s.experts)), "--"]
    for key, cmd in [("merge/start_up", [sys.executable, "-c", "import mergebench.cli.main, mergebench.merging.engine"]),
                     ("merge/io_floor_models", floor), ("merge/io_floor", floor + [str(f) for f in gram_files])]:
        step(key, cmd)
        shutil.rmtree(merged, ignore_errors=True)
    for method, method_args in merge_jobs(s, grams, args).items():
        r = step(f"merge/{method}", ms.merge_cli(method_args, s.base, s.experts, merged, device=args.device))
        manifest = merged / "merge_manifest.json"
        if manifest.is_file():
            r["device_peak_bytes"] = json.loads(manifest.read_text()).get("peak_cuda_bytes")
        shutil.rmtree(merged, ignore_errors=True)
    result["layer_bytes"], result["all_layers_bytes"] = working_sets(s.base, grams[0], T)
    shutil.rmtree(scratch, ignore_errors=True)
    return result


# --- report ---------------------------------------------------------------------------------------------
STATS_HEAD = ["model", "pass", "samples", "tokens", "tok/s", "baseline", "baseline tok/s", "cost",
              "peak MiB", "baseline peak MiB", "process s"]
MERGE_HEAD = ["model", "merge", "specialists", "wall s", "cpu s", "peak MiB", "x I/O floor", "x task arith. (s)",
              "largest layer G+W MiB", "all layers G+W MiB"]


def count(params: int) -> str:
    return f"{params / 1e6:.1f}M" if params < 1e8 else f"{params / 1e9:.2f}B"


def rate_cell(rate: float) -> str:
    return f"{rate:.0f}" if rate >= 100 else f"{rate:.3g}"


def _mib(x) -> str:
    return "-" if x is None else f"{x / MIB:.0f}" if x > 10 * MIB else f"{x / MIB:.1f}"


def stats_rows(res: dict, device: str) -> list[list[str]]:
    runs, body = res["runs"], []
    counts = res["samples"]
    for kind, baseline, n in (("gram", "forward", counts["samples"]),
                              ("fisher", "forward+backward", counts["fisher_samples"])):
        st, bl = runs.get(f"stats/{kind}"), runs.get(f"baseline/{baseline}")
        if not st:
            continue
        if not (st["ok"] and bl and bl["ok"] and st.get("tokens") and bl.get("tokens")):
            body.append([res["label"], kind, str(n)] + ["failed"] + ["-"] * (len(STATS_HEAD) - 4))
            continue
        rate, base_rate = st["tokens"] / st["pass_seconds"], bl["tokens"] / bl["pass_seconds"]
        cells = [res["label"], kind, str(n), str(st["tokens"]), rate_cell(rate), baseline, rate_cell(base_rate),
                 f"{base_rate / rate:.2f}x", str(st["peak_rss_mib"]), str(bl["peak_rss_mib"]), f"{st['seconds']:.1f}"]
        if device != "cpu":
            cells += [_mib(st.get("device_peak_bytes")), _mib(bl.get("device_peak_bytes"))]
        body.append(cells)
    return body


MERGE_ROWS = (  # run key, row name, the I/O floor it is compared with
    ("merge/start_up", "start-up (imports only)", None),
    ("merge/io_floor_models", "I/O floor (models)", None),
    ("merge/io_floor", "I/O floor (models + Grams)", None),
    ("merge/task_arithmetic", "task arithmetic", "merge/io_floor_models"),
    ("merge/regmean", "RegMean", "merge/io_floor"),
    ("merge/regmean_pp", "RegMean++ (its own data pass)", "merge/io_floor_models"),
)


def merge_rows(res: dict, device: str) -> list[list[str]]:
    runs, body = res["runs"], []
    ta = runs.get("merge/task_arithmetic")
    for key, name, floor in MERGE_ROWS:
        r = runs.get(key)
        if not r:
            continue
        if not r["ok"]:
            body.append([res["label"], name, str(res["specialists"]), "failed"] + ["-"] * (len(MERGE_HEAD) - 4))
            continue
        if res.get("merged_layers") and key in ("merge/task_arithmetic", "merge/regmean"):
            name += f" (layers 0-{res['merged_layers'] - 1} of {res['layers']})"
        whole = floor and runs[floor]["ok"] and not res.get("merged_layers")  # the floor reads every tensor
        vs_floor = f"{r['seconds'] / runs[floor]['seconds']:.1f}x" if whole else "-"
        vs_ta = (f"{r['seconds'] / ta['seconds']:.1f}x" if key in ("merge/regmean", "merge/regmean_pp") and ta["ok"]
                 else "-")
        sizes = ([_mib(res["layer_bytes"]), _mib(res["all_layers_bytes"])] if key == "merge/regmean"
                 else ["-", "-"])
        cells = [res["label"], name, str(res["specialists"]), f"{r['seconds']:.1f}", f"{r['cpu_seconds']:.1f}",
                 str(r["peak_rss_mib"]), vs_floor, vs_ta, *sizes]
        if device != "cpu":
            cells.append(_mib(r.get("device_peak_bytes")))
        body.append(cells)
    return body


def heads(device: str) -> tuple[list[str], list[str]]:
    if device == "cpu":
        return STATS_HEAD, MERGE_HEAD
    return STATS_HEAD + ["device peak MiB", "baseline device peak MiB"], MERGE_HEAD + ["device peak MiB"]


def notes_for(results: list[dict]) -> list[str]:
    notes = []
    for res in results:
        loads = [r["load_before"] for r in res["runs"].values()]
        if loads:
            counts = res["samples"]
            notes.append(f"{res['label']} ({count(res['params'])} parameters, samples of at most "
                         f"{res['max_length']} tokens, {counts['merge_samples']} per specialist for the merge): 1-min "
                         f"load average before runs {min(loads):.1f} "
                         f"to {max(loads):.1f} ({os.cpu_count()} CPUs)")
        notes += [f"{res['label']}: {n}" for n in res["notes"]]
        if res.get("merged_layers"):
            notes.append(f"{res['label']}: merges of decoder layers 0-{res['merged_layers'] - 1} only (--merge-layers; "
                         "every layer has the same shapes, so merging them all holds no more at once); no I/O floor "
                         "ratio for them, as the floor reads every tensor")
    return notes + [
        "tok/s: tokens of the pass over the pass's own time (model loading, tokenization and writing "
        "excluded); cost = baseline tok/s / statistics tok/s, what the statistics add on top of the model's "
        "own compute; peak MiB and process s: the whole process (imports, loading, writing); with --repeat, "
        "the run with the fastest pass",
        "merges: the first specialist's Grams are its gram row's, the others' from the merge sample count "
        "(RegMean++ samples as many itself); timed whole processes on a warm page cache; G+W: fp32 Grams of every "
        "specialist plus the base's and specialists' weights of a layer's linears (largest layer, and all layers "
        "together)",
    ]


def environment(device: str) -> dict:
    env = {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
           "torch": importlib.metadata.version("torch"), "device": device,
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if device != "cpu":
        import torch

        env["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return env


def report(results: list[dict], env: dict, command: str) -> str:
    """The two tables (markdown) with their notes."""
    sh, mh = heads(env["device"])
    s_body = [r for res in results for r in stats_rows(res, env["device"])]
    m_body = [r for res in results for r in merge_rows(res, env["device"])]
    return "\n".join([
        f"Statistics pass and data-dependent merge, {env['cpus']} CPUs, torch {env['torch']}, device "
        f"{env.get('gpu', env['device'])} ({env['date']}, `{command}`)", "",
        ms.render(s_body, markdown=True, head=sh), "", ms.render(m_body, markdown=True, head=mh), "",
        *[f"- {n}" for n in notes_for(results)]]) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2:])
        return 0
    if argv[:1] == ["--io-floor"]:
        io_floor(argv[1:])
        return 0
    sys.stdout.reconfigure(line_buffering=True)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="tiny,1.0", help="`tiny` and/or synthetic sizes in billions, comma separated")
    # The defaults keep a 1B run near ten minutes on two CPU cores: throughput and memory, not statistics quality.
    ap.add_argument("--samples", type=int, default=4, help="samples of the timed gram pass and its baseline")
    ap.add_argument("--fisher-samples", type=int, default=2, help="samples of the timed fisher pass")
    ap.add_argument("--merge-samples", type=int, default=2,
                    help="samples per specialist of the other specialists' Grams, and of RegMean++")
    ap.add_argument("--max-length", type=int, default=256, help="tokens per sample of the synthetic models")
    ap.add_argument("--specialists", type=int, default=2, help="specialists of the synthetic models (tiny: 5)")
    ap.add_argument("--batch-size", type=int, default=8, help="samples per forward pass of the gram pass")
    ap.add_argument("--pp-max-size", type=float, default=0.25, help="run RegMean++ up to this synthetic size (B)")
    ap.add_argument("--merge-layers", type=int, default=4,
                    help="synthetic models: merge only the first N decoder layers (0: the whole default set)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each timed pass and its baseline, alternating; the fastest pass is kept")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU host (untested)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out", help="cache and results folder")
    ap.add_argument("--quick", action="store_true", help=f"a smoke test: {QUICK}")
    ap.add_argument("--from-json", type=Path, help="measure nothing: write the tables of a saved run again")
    args = ap.parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        write_report(args.out.resolve(), saved["results"], saved["env"], saved["command"], saved.get("quick", False))
        return 0
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    root = args.out.resolve()
    work = root / "stats-bench"
    work.mkdir(parents=True, exist_ok=True)
    _held = ms.lock(work)  # released when this process exits
    rows = max(args.samples, args.fisher_samples, args.merge_samples)
    subjects = [tiny_subject(root / "tiny-family") if size == TINY else
                synthetic_subject(root, float(size), args.specialists, rows, args.max_length)
                for size in args.sizes.split(",")]
    results = [bench_subject(s, work, args) for s in subjects]
    command = " ".join(["python", "benchmarks/stats_speed.py", *argv])
    write_report(root, results, environment(args.device), command, args.quick)
    return 0


def write_report(root: Path, results: list[dict], env: dict, command: str, quick: bool) -> None:
    md = report(results, env, command)
    print("\n" + md)
    name = "stats-latest-quick" if quick else "stats-latest"
    saved = {"command": command, "env": env, "quick": quick, "results": results}
    (root / f"{name}.json").write_text(json.dumps(saved, indent=2) + "\n")
    (root / f"{name}.md").write_text(md)
    if not quick:  # a smoke test must not overwrite the last real measurement
        (ROOT / "benchmarks" / "STATS_RESULTS.md").write_text(md)
    print(f"wrote {root / name}.json and .md" + ("" if quick else " and benchmarks/STATS_RESULTS.md"))


if __name__ == "__main__":
    sys.exit(main())
