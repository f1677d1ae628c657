"""Harness adapters: the exact command each harness runs for a model, and how its output is read."""

from mergebench.evaluation.adapters import bigcode, lmeval, safety
from mergebench.evaluation.adapters.invocation import OFFLINE_ENV, HarnessRun, Sandbox

ADAPTERS = {"lmeval": lmeval, "bigcode": bigcode, "safety": safety}

__all__ = ["ADAPTERS", "OFFLINE_ENV", "HarnessRun", "Sandbox", "bigcode", "lmeval", "safety"]
