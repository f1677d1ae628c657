"""The unified results file of one model: its result records and domain scores, as one JSON document.

The report reads this file instead of raw harness outputs, so raw formats are parsed in one place.
It is written atomically (temporary file, then rename) so an interrupted import leaves no half file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mergebench.evaluation.records import RecordFormatError, ResultRecord
from mergebench.evaluation.scores import ScoreSummary

RESULTS_FILENAME = "mergebench_results.json"
DOCUMENT_FORMAT = "mergebench-results"
DOCUMENT_SCHEMA = 1


def results_document(records: list[ResultRecord], summary: ScoreSummary) -> dict[str, Any]:
    """The JSON document for `records` of one model and their scores."""
    labels = sorted({record.model for record in records})
    return {
        "format": DOCUMENT_FORMAT,
        "schema": DOCUMENT_SCHEMA,
        "model": labels[0] if len(labels) == 1 else labels,
        "records": [record.to_dict() for record in records],
        "scores": summary.to_dict(),
    }


def write_document(path: str | Path, document: dict[str, Any]) -> None:
    """Write `document` to `path` atomically, creating the parent folder if needed."""
    path = Path(path)
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a results file is meant to be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_records(path: str | Path) -> list[ResultRecord]:
    """The result records of a results file written by write_document."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise RecordFormatError(f"{path}: cannot read results file: {error}") from None
    if not isinstance(document, dict) or document.get("format") != DOCUMENT_FORMAT:
        raise RecordFormatError(f"{path}: not a {DOCUMENT_FORMAT} file")
    if document.get("schema") != DOCUMENT_SCHEMA:
        raise RecordFormatError(
            f"{path}: results file schema {document.get('schema')!r} is not {DOCUMENT_SCHEMA}"
        )
    records = document.get("records")
    if not isinstance(records, list):
        raise RecordFormatError(f"{path}: 'records' must be a list")
    return [ResultRecord.from_dict(record) for record in records]
