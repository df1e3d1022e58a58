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


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny
    models gain nothing from a second thread, and on a shared 2-core machine its waits make each run ~10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_reward(tmp_path_factory) -> str:
    """A reward model as the hub holds one (sequence classification, one output, no redline run card): tiny-random's
    body under a seeded random head. tiny-random itself is a causal LM, which the reward judge refuses."""
    import torch

    from redline.models import load_reward_model, load_tokenizer

    folder = tmp_path_factory.mktemp("tiny-reward")
    torch.manual_seed(0)
    load_reward_model("tiny-random", device="cpu").save_pretrained(folder)
    load_tokenizer("tiny-random").save_pretrained(folder)
    return str(folder)
