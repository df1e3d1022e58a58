"""scripts/ship_model.py: a trained critic, reward or reward-gap model copied into the checkout as a shipped one,
and read back as the run reads: by the judges, and by PPO and PIT as the reward under their value model's adapter."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from redline.cli import main
from tests.test_train_critic import FEEDBACK

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ship_model", ROOT / "scripts" / "ship_model.py")
ship_model = importlib.util.module_from_spec(_spec)
sys.modules["ship_model"] = ship_model
_spec.loader.exec_module(ship_model)


def test_a_shipped_critic_loads_and_scores_as_the_run_does(jsonl, tmp_path):
    from safetensors.torch import load_file

    from redline.models import load_causal_lm, load_tokenizer, run_info

    run = tmp_path / "run"
    assert main(["train", "critic", "--data", str(jsonl(FEEDBACK)), "--model", "tiny-random", "--out", str(run),
                 "--max-steps", "2", "--learning-rate", "1e-2"]) == 0
    to = tmp_path / "models" / "critic"
    assert ship_model.main([str(run), "--to", str(to), "--notes", "measured: nowhere yet"]) == 0
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


def test_a_shipped_reward_model_scores_as_the_merged_run_does(jsonl, tmp_path, tiny_reward):
    from redline.judges.reward import RewardJudge
    from redline.models import run_info

    rankings = [{"prompt": f"Write about item {i}.", "responses": ["A fine answer.", "bad", "An answer."], "ranks": [1, 3, 2]}
                for i in range(8)]
    run = tmp_path / "rm"
    assert main(["train", "reward", "--data", str(jsonl(rankings)), "--model", "tiny-random", "--out", str(run),
                 "--max-steps", "3", "--save-steps", "3", "--learning-rate", "1e-2",
                 "--normalize-with", str(jsonl([{"prompt": "Say hi.", "response": "Hi there."}], "demos.jsonl"))]) == 0
    assert run_info(run)["adapter"] is False and run_info(run)["metrics"]["reward_bias"] != 0
    to = tmp_path / "models" / "reward"
    assert ship_model.main([str(run), "--to", str(to)]) == 0
    info = run_info(to)
    assert info["kind"] == "reward" and info["adapter"] is True and not (to / "checkpoints").exists()
    # the checkpoint's adapter_config names this machine's cache folder; the shipped one the base's name
    assert json.loads((to / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-random"
    pairs = [("Write about item 1.", "A fine answer."), ("Write about item 1.", "bad"), ("Say hi.", "Hi there.")]
    merged, shipped = RewardJudge(str(run)).score(pairs), RewardJudge(str(to)).score(pairs)
    assert shipped == pytest.approx(merged, abs=0.05)  # bias included: the adapter in bfloat16, the same scores
    assert RewardJudge(tiny_reward).score(pairs) != pytest.approx(shipped, abs=0.05)  # an untrained head
    # PPO's value model starts from the shipped adapter run; with the shared reference its adapter off is the reward
    # model: the shipped one's own adapter must stay on (folded in), not switch off with PPO's
    chats = [[{"role": "user", "content": p}] for p, _ in pairs]
    assert ppo_reward(to, chats, [y for _, y in pairs]) == pytest.approx(merged, abs=0.05)


def ppo_reward(model: Path, chats: list, responses: list, records: list | None = None, kind: str = "reward") -> list:
    """The reward `train ppo` (or with kind "gap", `train pit`) computes from ``model`` as its value model's start,
    shared reference and GAE: the value model read with its own adapter off."""
    from redline.train.gap_reward import gap_reward
    from redline.train.ppo import PPOConfig, instructgpt_reward, load_ppo_models

    models = load_ppo_models(PPOConfig(policy="tiny-random", reward=str(model), prompts="unused"), "cpu")
    assert models.reward_model is None  # shared: no second copy loaded
    if kind == "gap":
        return gap_reward(models.value, models.tokenizer, adapter_off=True)(chats, responses, records)
    return instructgpt_reward(models.value, models.tokenizer, adapter_off=True)(chats, responses, records or [{}] * len(chats))


def test_a_shipped_gap_model_is_pits_reward_as_the_merged_run_is(jsonl, tmp_path):
    from redline.models import load_reward_model, load_tokenizer, run_info
    from redline.train.gap_reward import gap_reward
    from tests.test_gap_reward import preferences

    run = tmp_path / "gap"
    assert main(["train", "gap-reward", "--data", str(jsonl(preferences())), "--model", "tiny-random", "--out", str(run),
                 "--learning-rate", "1e-2", "--max-steps", "3", "--save-steps", "3", "--batch-size", "4",
                 "--warmup", "0", "--device", "cpu"]) == 0
    assert ship_model.main([str(run), "--to", str(tmp_path / "models" / "gap")]) == 0
    to = tmp_path / "models" / "gap"
    info = run_info(to)
    assert info["kind"] == "gap-reward" and info["adapter"] is True and not (to / "checkpoints").exists()
    records = [{"prompt": "Question 1?", "reference": "no"}, {"prompt": "Question 1?", "reference": "good answer 1 " * 4}]
    responses = ["good answer 1 " * 4, "no"]
    merged = gap_reward(load_reward_model(str(run), device="cpu"), load_tokenizer(str(run)))([[], []], responses, records)
    shipped = gap_reward(load_reward_model(str(to), device="cpu"), load_tokenizer(str(to)))([[], []], responses, records)
    assert shipped == pytest.approx(merged, abs=0.05)
    base = gap_reward(load_reward_model("tiny-random", device="cpu"), load_tokenizer("tiny-random"))([[], []], responses, records)
    assert base != pytest.approx(shipped, abs=0.05)  # the adapter is applied
    assert ppo_reward(to, [[], []], responses, records, kind="gap") == pytest.approx(merged, abs=0.05)


def test_a_reward_run_whose_last_checkpoint_is_not_its_last_step_is_refused(tmp_path, capsys):
    run = tmp_path / "rm"
    (run / "checkpoints" / "checkpoint-50").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-50" / "adapter_model.safetensors").write_bytes(b"")
    (run / "checkpoints" / "checkpoint-50" / "trainer_state.json").write_text("{}")
    (run / "redline.json").write_text(json.dumps({"kind": "reward", "adapter": False, "metrics": {"steps": 60}}))
    assert ship_model.main([str(run), "--to", str(tmp_path / "to")]) == 2
    assert "not the run's last step (60)" in capsys.readouterr().err and not (tmp_path / "to").exists()


def test_a_run_that_is_not_a_critic_or_reward_model_is_refused(tmp_path, capsys):
    run = tmp_path / "sft"
    run.mkdir()
    (run / "redline.json").write_text(json.dumps({"kind": "sft", "adapter": True}))
    assert ship_model.main([str(run), "--to", str(tmp_path / "to")]) == 2
    assert "not a LoRA critic, reward or gap-reward run" in capsys.readouterr().err and not (tmp_path / "to").exists()


def test_the_shipped_cards_command_holds_no_machine_path(tmp_path):
    run = tmp_path / "elsewhere" / "gap"
    run.mkdir(parents=True)
    command = (f"redline train gap-reward --data {ROOT}/data/simulated/preferences.jsonl --notes 'two words' "
               f"--init {tmp_path}/other --out {run}/")
    assert ship_model.portable_command(command, run) == (
        "redline train gap-reward --data data/simulated/preferences.jsonl --notes 'two words' "
        f"--init {tmp_path}/other --out runs/gap")  # a path that is neither the checkout's nor the run's stays
    inside = ROOT / "runs" / "igpt2" / "rm"  # a run inside the checkout keeps its own relative path
    assert ship_model.portable_command(f"redline train reward --out {inside}", inside) == "redline train reward --out runs/igpt2/rm"


def test_a_critic_on_a_base_folder_is_shipped_naming_the_base_from_where_it_lands(jsonl, tmp_path, monkeypatch):
    from redline.models import load_causal_lm, run_info

    monkeypatch.chdir(tmp_path)
    assert main(["train", "sft", "--data", str(jsonl([{"prompt": "Say hi.", "response": "Hi."}] * 2)), "--model",
                 "tiny-random", "--no-lora", "--max-steps", "1", "--out", "runs/base"]) == 0
    assert main(["train", "critic", "--data", str(jsonl(FEEDBACK)), "--model", "runs/base", "--out", "runs/critic",
                 "--max-steps", "1"]) == 0
    to = tmp_path / "checkout" / "models" / "critic"
    assert ship_model.main(["runs/critic", "--to", str(to)]) == 0
    card = json.loads((to / "redline.json").read_text())
    assert (to / card["base_path"]).resolve() == (tmp_path / "runs" / "base").resolve()  # was the run's own, from elsewhere
    monkeypatch.chdir(to)
    assert run_info(".")["base_model"] == str((tmp_path / "runs" / "base").resolve())
    assert load_causal_lm(".", device="cpu") is not None


def test_a_destination_that_holds_the_run_or_other_files_is_refused_and_left_as_it_was(tmp_path, capsys):
    run = tmp_path / "models" / "critic"
    run.mkdir(parents=True)
    (run / "redline.json").write_text(json.dumps({"kind": "critic", "adapter": True}))
    (run / "adapter_model.safetensors").write_bytes(b"weights")
    for to in (run, tmp_path / "models"):  # the run itself, and the folder above it
        assert ship_model.main([str(run), "--to", str(to)]) == 2
        assert "which replacing it would delete" in capsys.readouterr().err
        assert (run / "adapter_model.safetensors").read_bytes() == b"weights"
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    assert ship_model.main([str(run), "--to", str(other)]) == 2
    assert "not a shipped model" in capsys.readouterr().err and (other / "todo.txt").read_text() == "keep me"


def _adapter_run(folder: Path, metrics: dict) -> Path:
    """A critic run as ship_model reads one: its card, and an adapter of one tensor."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/cache/tiny"}))
    (folder / "redline.json").write_text(json.dumps({"kind": "critic", "adapter": True, "base_model": "tiny-random",
                                                     "metrics": metrics}))
    return folder


def test_the_card_is_written_as_utf8_whatever_the_locale(tmp_path):
    """README.md was written in the locale's encoding: under LANG=C (PYTHONUTF8=0) a metric of None (the card's '–')
    was a UnicodeEncodeError that left README.md cut short, after the previous shipped model had been removed; a
    NaN metric of an older card was copied into redline.json as NaN, which strict JSON readers refuse."""
    import os
    import subprocess

    run = _adapter_run(tmp_path / "run", {"eval_loss": None, "final_loss": float("nan"), "steps": 2})
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PYTHONIOENCODING": "utf-8",
           "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "ship_model.py"), str(run), "--to", str(tmp_path / "to")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    card = (tmp_path / "to" / "README.md").read_text(encoding="utf-8")
    assert "| eval_loss | – |" in card and card.endswith("\n")
    shipped = json.loads((tmp_path / "to" / "redline.json").read_text(), parse_constant=pytest.fail)  # NaN: null
    assert shipped["metrics"]["final_loss"] is None


def test_a_missing_run_a_file_as_destination_or_an_adapter_not_all_there_is_refused_before_anything_is_removed(
        tmp_path, capsys):
    """A missing run was called a run whose redline.json says kind None; --to a file was a NotADirectoryError
    traceback; a run without adapter_config.json removed the previous shipped model, then failed (FileNotFoundError)."""
    assert ship_model.main([str(tmp_path / "nope"), "--to", str(tmp_path / "to")]) == 2
    assert "nope: no redline.json: not a finished `redline train` run folder" in capsys.readouterr().err
    run = _adapter_run(tmp_path / "run", {"steps": 2})
    (tmp_path / "file").write_text("keep me")
    assert ship_model.main([str(run), "--to", str(tmp_path / "file")]) == 2
    assert "--to " in (err := capsys.readouterr().err) and "a file, not a folder" in err
    assert (tmp_path / "file").read_text() == "keep me"
    to = tmp_path / "models" / "critic"
    assert ship_model.main([str(run), "--to", str(to)]) == 0  # the previous shipped model
    (run / "adapter_config.json").unlink()
    assert ship_model.main([str(run), "--to", str(to)]) == 2
    assert "no adapter_config.json: the adapter is not all there" in capsys.readouterr().err
    assert (to / "adapter_config.json").is_file() and (to / "README.md").is_file()  # left as it was
