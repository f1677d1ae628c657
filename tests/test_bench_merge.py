"""benchmarks/merge_speed.py's verdicts on its targets, from stand-in measurements (no timing is run or
asserted): each ratio is computed against the baseline of the same run and called met or not."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import merge_speed as ms  # noqa: E402


def _run(seconds: float, mib: int = 400) -> dict:
    return {"ok": True, "seconds": seconds, "cpu_seconds": seconds, "peak_rss_mib": mib, "load_before": 0.1}


def _result(billions: float, ties_global: float, dare_mib: int) -> dict:
    runs = {"io/floor": _run(10.0), "ours/task_arithmetic": _run(14.0), "ours/ties": _run(40.0),
            "ours/ties_global": _run(ties_global), "ours/dare": _run(20.0, dare_mib),
            "mergekit/task_arithmetic": _run(30.0, 2000), "mergekit/ties": _run(200.0, 3000),
            "mergekit/dare": _run(50.0, 500)}
    return {"billions": billions, "params": int(billions * 1e9), "runs": runs,
            "all_runs": {k: [v] for k, v in runs.items()}}


def test_targets_are_called_met_or_not_from_ratios_of_one_run():
    lines = ms.targets(_result(0.5, ties_global=25.0, dare_mib=400))
    assert "0.5B target task arithmetic within 1.5x of the I/O floor: 1.40x, met" in lines
    assert "0.5B target TIES (global) within 3x of the I/O floor: 2.50x, met" in lines
    assert "0.5B target TIES (global) at least 4x faster than mergekit's TIES: 8.00x, met" in lines
    assert "0.5B target DARE at least 3x faster than mergekit: 2.50x, NOT met" in lines
    assert "0.5B target peak memory no higher than mergekit's: met" in lines
    slow = ms.targets(_result(1.0, ties_global=60.0, dare_mib=900))
    assert "1B target TIES (global) within 3x of the I/O floor: 6.00x, NOT met" in slow
    assert "1B target peak memory no higher than mergekit's: NOT met (dare)" in slow


def test_flat_memory_compares_the_smallest_and_largest_size():
    lines = ms.flat_memory([_result(0.5, 25.0, 400), _result(1.0, 25.0, 900)])
    assert "target flat peak memory 0.5B -> 1B, task_arithmetic: 400 -> 400 MiB (1.00x), met" in lines
    assert "target flat peak memory 0.5B -> 1B, dare: 400 -> 900 MiB (2.25x), NOT met" in lines
