"""Result parsers, one module per harness output format, and discovery of the files in a result folder."""

from mergebench.evaluation.parsers.bigcode import parse_bigcode
from mergebench.evaluation.parsers.common import ResultParseError
from mergebench.evaluation.parsers.discover import FILE_PARSERS, find_result_files, import_results
from mergebench.evaluation.parsers.lmeval import parse_lmeval
from mergebench.evaluation.parsers.safety import parse_safety

__all__ = [
    "FILE_PARSERS",
    "ResultParseError",
    "find_result_files",
    "import_results",
    "parse_bigcode",
    "parse_lmeval",
    "parse_safety",
]
