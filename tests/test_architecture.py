"""The tree's boundaries, read from the source: which part may import which.

Every import statement counts, lazy ones inside functions too: a runtime translates launch requests
and must work without the pipeline (issue: one launch boundary)."""

from __future__ import annotations

import ast
from pathlib import Path

import mergebench

ROOT = Path(mergebench.__file__).parent


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def imports_of(part: str) -> dict[str, set[str]]:
    return {str(p.relative_to(ROOT)): imported_modules(p) for p in sorted((ROOT / part).rglob("*.py"))}


def test_runtimes_import_nothing_of_the_pipeline():
    reaching = {f: sorted(m for m in mods if m.startswith(("mergebench.pipeline", "mergebench.evaluation",
                                                           "mergebench.merging")))
                for f, mods in imports_of("runtimes").items()}
    assert {f: m for f, m in reaching.items() if m} == {}
    assert "runtimes/request.py" in reaching  # the reader sees the files it should


def test_the_reader_finds_lazy_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from mergebench.pipeline.stage import Stage\n    import mergebench.merging\n")
    assert imported_modules(probe) == {"mergebench.pipeline.stage", "mergebench.merging"}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def module_graph(part: str) -> dict[str, set[str]]:
    """Imports between the modules of `part` (a package's own __init__ aside: importing a submodule
    runs it, which no file can avoid)."""
    graph = {}
    for path in sorted((ROOT / part).rglob("*.py")):
        name = "mergebench." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        prefix = f"mergebench.{part}"
        graph[name] = {m for m in imported_modules(path) if m.startswith(prefix) and m != name}
    return graph


def test_the_merging_core_has_no_import_cycle():
    graph = module_graph("merging")
    assert "mergebench.merging.engine" in graph and "mergebench.merging.run" in graph
    assert _cycle(graph) is None


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


def test_only_the_executors_build_on_the_streaming_engine():
    """Mask training and the global passes start from the validated merge plan and the task-vector
    source, not from a whole Merger built to write nowhere."""
    graph = module_graph("merging")
    users = sorted(m for m, deps in graph.items() if "mergebench.merging.engine" in deps)
    assert users == ["mergebench.merging.regmean_pp", "mergebench.merging.run"], users
    assert "mergebench.merging.plan" in graph["mergebench.merging.datapass.masks"]


def test_finetuning_and_the_data_passes_share_tokens_not_each_other():
    """Tokens, padding and the response NLL live in mergebench/tokens.py. Dependencies point one way: the
    merging core imports nothing of finetuning (its data passes once borrowed finetune's pad rule), and
    finetuning reaches into merging only to resolve a model path as checkpoints are resolved."""
    def reaching(part: str, other: str) -> dict[str, list[str]]:
        return {f: sorted(m for m in mods if m.startswith(other)) for f, mods in imports_of(part).items()
                if any(m.startswith(other) for m in mods)}

    assert reaching("finetune", "mergebench.merging") == {"finetune/job.py": ["mergebench.merging.io.checkpoint"]}
    assert reaching("merging", "mergebench.finetune") == {}
    users = {f for f, mods in {**imports_of("finetune"), **imports_of("merging")}.items() if "mergebench.tokens" in mods}
    assert {"finetune/data.py", "finetune/trainer.py", "merging/datapass/stats.py",
            "merging/datapass/masks.py"} <= users
