"""benchmarks/stats_speed.py on a two-layer synthetic model, in process: the timed statistics passes and their
baselines, the merge working-set sizes, and the tables (with stand-in process measurements; no timing is
asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import merge_speed as ms  # noqa: E402
import stats_speed as bench  # noqa: E402


def test_stats_benchmark_helpers_and_tables(tmp_path, capsys):
    cfg = ms.llama_config(0.001) | {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
                                    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
                                    "num_hidden_layers": 2, "max_position_embeddings": 128}
    models = [tmp_path / "m" / name for name in ("base", "specialist1", "specialist2")]
    for t, m in enumerate(models):
        ms.write_model(m, cfg, t)
    subject = bench.prepare_synthetic(models[0], models[1:], rows=4, max_length=64, label="test")
    assert subject.params == bench._param_count(models[0]) > 0

    runs = {}
    grams = [tmp_path / "grams-0", tmp_path / "grams-1"]
    for kind, baseline, out in (("gram", "forward", grams[0]), ("fisher", "forward+backward", tmp_path / "f")):
        args = bench.stats_args(subject, 0, kind, 4, out, "cpu", 2)
        runs[f"stats/{kind}"] = bench.child("stats", args)
        runs[f"baseline/{baseline}"] = bench.child(baseline, args)
        # the baseline runs over exactly the tokens the statistics pass saw
        assert runs[f"stats/{kind}"]["tokens"] == runs[f"baseline/{baseline}"]["tokens"] > 4 * 16
    assert bench.RESULT in capsys.readouterr().out
    bench.child("stats", bench.stats_args(subject, 1, "gram", 2, grams[1], "cpu", 2))

    layer, whole = bench.working_sets(models[0], grams[0], 2)
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    kv = cfg["num_key_value_heads"] * cfg["head_dim"]
    gram_entries = 3 * h * h + i * i  # q/k/v share one input, gate/up another; o and down their own
    weight_entries = 2 * h * h + 2 * kv * h + 3 * h * i
    assert layer == 4 * (2 * gram_entries + 3 * weight_entries) and whole == 2 * layer

    process = {"ok": True, "seconds": 2.0, "cpu_seconds": 1.5, "peak_rss_mib": 300, "load_before": 0.5}
    runs = {k: process | v for k, v in runs.items()}
    runs |= {k: dict(process) for k in ("merge/start_up", "merge/io_floor_models", "merge/io_floor",
                                        "merge/task_arithmetic", "merge/regmean")}
    runs["merge/regmean"]["seconds"] = 3.0
    result = {"label": "test", "params": subject.params, "specialists": 2, "max_length": 64, "runs": runs,
              "samples": {"samples": 4, "fisher_samples": 4, "merge_samples": 2},
              "layer_bytes": layer, "all_layers_bytes": whole, "notes": []}
    md = bench.report([result], bench.environment("cpu"), "test")
    rows = {tuple(c.strip() for c in line.strip("|").split("|")) for line in md.splitlines() if line.startswith("| test")}
    gram = next(r for r in rows if r[1] == "gram")
    assert gram[5] == "forward" and float(gram[4]) > 0 and gram[7].endswith("x")
    regmean = next(r for r in rows if r[1] == "RegMean")
    assert regmean[7] == "1.5x" and float(regmean[8]) < float(regmean[9])
    assert len(rows) == 2 + 5 and "failed" not in md
