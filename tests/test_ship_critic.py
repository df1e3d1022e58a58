"""scripts/ship_critic.py: a trained critic copied into the checkout as the demo's shipped critic."""

import importlib.util
import json
import sys
from pathlib import Path

import torch

from redline.cli import main
from tests.test_train_critic import FEEDBACK

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ship_critic", ROOT / "scripts" / "ship_critic.py")
ship_critic = importlib.util.module_from_spec(_spec)
sys.modules["ship_critic"] = ship_critic
_spec.loader.exec_module(ship_critic)


def test_a_shipped_critic_loads_and_scores_as_the_run_does(jsonl, tmp_path):
    from safetensors.torch import load_file

    from redline.models import load_causal_lm, load_tokenizer, run_info

    run = tmp_path / "run"
    assert main(["train", "critic", "--data", str(jsonl(FEEDBACK)), "--model", "tiny-random", "--out", str(run),
                 "--max-steps", "2", "--learning-rate", "1e-2"]) == 0
    to = tmp_path / "models" / "critic"
    assert ship_critic.main([str(run), "--to", str(to), "--notes", "measured: nowhere yet"]) == 0
    assert not (to / "checkpoints").exists()
    weights = load_file(str(to / "adapter_model.safetensors"))
    assert weights and all(w.dtype == torch.bfloat16 for w in weights.values())
    info = run_info(to)
    assert info["kind"] == "critic" and info["notes"] == "measured: nowhere yet"
    assert "measured: nowhere yet" in (to / "README.md").read_text()

    tokenizer = load_tokenizer(str(to))
    ids = tokenizer("Critique: it uses capital letters.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        original = load_causal_lm(str(run), device="cpu")(ids).logits
        shipped = load_causal_lm(str(to), device="cpu")(ids).logits
        base = load_causal_lm("tiny-random", device="cpu")(ids).logits
    assert torch.allclose(original, shipped, atol=1e-2)  # the adapter in bfloat16: the same model to rounding
    assert (shipped - base).abs().max() > 10 * (shipped - original).abs().max()  # ... and the adapter is applied


def test_a_run_that_is_not_a_critic_is_refused(tmp_path, capsys):
    run = tmp_path / "rm"
    run.mkdir()
    (run / "redline.json").write_text(json.dumps({"kind": "reward", "adapter": True}))
    assert ship_critic.main([str(run), "--to", str(tmp_path / "to")]) == 2
    assert "not a LoRA critic run" in capsys.readouterr().err and not (tmp_path / "to").exists()
