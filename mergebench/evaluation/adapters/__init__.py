"""Harness adapters: the exact command each harness runs for a model, and how its output is read."""

from mergebench.evaluation.adapters import bigcode, lmeval, safety
from mergebench.evaluation.adapters.invocation import OFFLINE_ENV, HarnessRun

ADAPTERS = {"lmeval": lmeval, "bigcode": bigcode, "safety": safety}
#: Each harness's settings (their defaults are MergeBench's protocol); `limit` where the harness has one.
SETTINGS = {"lmeval": lmeval.LmEvalSettings, "bigcode": bigcode.BigcodeSettings, "safety": safety.SafetySettings}

__all__ = ["ADAPTERS", "SETTINGS", "OFFLINE_ENV", "HarnessRun", "bigcode", "lmeval", "safety"]
