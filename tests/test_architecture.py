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
