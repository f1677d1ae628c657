"""The names of the stage kinds and where each keeps its output, in a leaf module: the pipeline runs
these kinds, and the HPC config names them (`array_kinds`) without depending on the pipeline."""

from __future__ import annotations

#: Where each kind of stage keeps its output inside the workspace.
CATEGORY = {"fetch": "models", "fetch_tasks": "data", "tiny_build": "models", "local_family": "models",
            "stats": "stats", "merge": "models", "tune": "models", "eval": "evals", "report": "reports"}

#: Kinds that reach the hub: they alone run with network, HF_TOKEN and HF_ENDPOINT; every other stage runs
#: with the hub offline and reads what these fetched.
HUB_KINDS = frozenset({"fetch", "fetch_tasks"})
