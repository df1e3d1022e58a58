import json
from pathlib import Path

import pytest


def write_jsonl(path: Path, rows) -> Path:
    """Write rows (dicts, or raw strings for malformed lines) as a JSONL file."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


@pytest.fixture
def jsonl(tmp_path):
    def make(rows, name="data.jsonl"):
        return write_jsonl(tmp_path / name, rows)

    return make
