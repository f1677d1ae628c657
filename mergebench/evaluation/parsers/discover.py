"""Find the raw harness outputs in a result folder and parse each with the right parser.

Files are recognised by name, never by sniffing content: a truncated lm_eval.json must fail loudly,
not be skipped as "not a result file". Names: MergeBench's published ones, lm-eval's own
results_*.json (directly or one folder down, where `lm_eval --output_path` puts them), and
bigcode's default evaluation_results.json.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mergebench.evaluation.parsers.bigcode import parse_bigcode
from mergebench.evaluation.parsers.common import ResultParseError
from mergebench.evaluation.parsers.lmeval import parse_lmeval
from mergebench.evaluation.parsers.safety import parse_safety
from mergebench.evaluation.records import ResultRecord

Parser = Callable[..., ResultRecord]

#: Exact file names, in the order records are returned.
FILE_PARSERS: dict[str, Parser] = {
    "lm_eval.json": parse_lmeval,
    "code_eval.json": parse_bigcode,
    "evaluation_results.json": parse_bigcode,
    "safety_eval.json": parse_safety,
}
LMEVAL_PATTERN = "results_*.json"


def find_result_files(directory: str | Path) -> list[tuple[Path, Parser]]:
    """The recognised raw files under `directory`, each with its parser, lm-eval first."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ResultParseError(directory, "is not a directory")
    found = [
        (directory / name, parser) for name, parser in FILE_PARSERS.items() if (directory / name).is_file()
    ]
    lmeval_runs = sorted(directory.glob(LMEVAL_PATTERN)) + sorted(directory.glob(f"*/{LMEVAL_PATTERN}"))
    found[:0] = [(path, parse_lmeval) for path in lmeval_runs if path.is_file()]
    if not found:
        looked_for = ", ".join([*FILE_PARSERS, LMEVAL_PATTERN])
        raise ResultParseError(directory, f"holds no harness result file (looked for {looked_for})")
    return found


def import_results(directory: str | Path, model: str | None = None) -> list[ResultRecord]:
    """Parse every raw harness output in `directory`; all records get one label (default: folder name)."""
    label = model or Path(directory).resolve().name
    return [parser(path, model=label) for path, parser in find_result_files(directory)]
