"""Names a module uses that nothing defines: a NameError that waits for the one path that reaches it.

(The thirty-third session dropped `run_info` from `train_sft`'s imports: SFT from a local run folder failed
with a NameError that only one test, of another module, happened to reach.) pyflakes reads the source without
running it; only its undefined-name and use-before-assignment findings are errors here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pyflakes_api = pytest.importorskip("pyflakes.api")
from pyflakes import reporter as pyflakes_reporter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ERRORS = ("undefined name", "referenced before assignment", "undefined local variable")


class Collect(pyflakes_reporter.Reporter):
    def __init__(self):
        self.found: list[str] = []

    def flake(self, message):
        text = str(message)
        if any(e in text for e in ERRORS):
            self.found.append(text)

    def syntaxError(self, filename, msg, lineno, offset, text):
        self.found.append(f"{filename}:{lineno}: {msg}")

    def unexpectedError(self, filename, msg):
        self.found.append(f"{filename}: {msg}")


def test_no_module_uses_a_name_it_never_defines():
    reporter = Collect()
    for folder in ("src", "scripts", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            pyflakes_api.checkPath(str(path), reporter)
    assert reporter.found == []


def test_the_check_finds_an_undefined_name(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    return run_info('x')\n")
    reporter = Collect()
    pyflakes_api.checkPath(str(bad), reporter)
    assert len(reporter.found) == 1 and "undefined name 'run_info'" in reporter.found[0]
