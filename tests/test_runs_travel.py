"""Runs that travel: a run folder names its base by hub id, carries a model page's metadata and a
snippet that loads it with plain transformers/PEFT, and `--push-to-hub` publishes it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from redline import RedlineError
from redline.cli import main
from redline.models import (
    EMBEDDED_HUB_ID,
    ModelCard,
    add_lora,
    embedded_dir,
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
    push_to_hub,
    save_model,
    score_texts,
    chat_text,
)


def card_metadata(folder: Path) -> dict:
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def snippet(folder: Path) -> str:
    (code,) = re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S)
    return code


def run_offline(code: str, env: dict) -> subprocess.CompletedProcess:
    """Python in a fresh process (the hub's offline switch is read at import), with one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def hub_cache_with_embedded(root: Path) -> Path:
    """The embedded model's cache laid out as the Hugging Face hub cache lays out a download of its id."""
    repo = root / ("models--" + EMBEDDED_HUB_ID.replace("/", "--"))
    revision = "0" * 40
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for f in embedded_dir().iterdir():
        (snapshot / f.name).symlink_to(f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return root


def test_an_adapter_on_the_embedded_model_names_its_hub_id_and_loads_offline_with_plain_peft(tmp_path):
    run = tmp_path / "run"
    model = add_lora(load_causal_lm("embedded", device="cpu"))
    save_model(model, load_tokenizer("embedded"), run, ModelCard(kind="sft", base_model="embedded",
                                                                  data=["HuggingFaceH4/ultrafeedback_binarized:test_prefs", "local.jsonl"]))
    adapter = json.loads((run / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == EMBEDDED_HUB_ID  # not ~/.cache/redline/...
    meta = card_metadata(run)
    assert meta["base_model"] == EMBEDDED_HUB_ID and meta["library_name"] == "peft"
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["HuggingFaceH4/ultrafeedback_binarized"]
    assert meta["pipeline_tag"] == "text-generation" and {"redline", "sft", "lora"} <= set(meta["tags"])
    assert json.loads((run / "redline.json").read_text())["base_model"] == "embedded"  # redline's own name stays

    # the card's snippet, on a machine with no redline cache, only the hub's (offline)
    code = snippet(run).replace("max_new_tokens=128", "max_new_tokens=2") + (
        "\nfrom peft import PeftModel\nassert isinstance(model, PeftModel)"
        f"\nassert model.peft_config['default'].base_model_name_or_path == {EMBEDDED_HUB_ID!r}\nprint('loaded')")
    hub = hub_cache_with_embedded(tmp_path / "hub")
    done = run_offline(code, {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "REDLINE_CACHE": str(tmp_path / "none")})
    assert done.returncode == 0 and "loaded" in done.stdout, done.stderr[-2000:]


def test_sft_run_pushed_to_a_local_folder_loads_with_auto_peft(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) + "\n" for i in range(4)))
    run, pushed = tmp_path / "run", tmp_path / "published"
    assert main(["train", "sft", "--data", str(data), "--model", "tiny-random", "--out", str(run), "--max-steps", "2",
                 "--device", "cpu", "--grad-accum", "1", "--save-steps", "1", "--push-to-hub", str(pushed)]) == 0
    assert (run / "checkpoints").is_dir() and not (pushed / "checkpoints").exists()
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "redline.json", "tokenizer.json"} <= {
        p.name for p in pushed.iterdir()}
    assert f'from_pretrained("{pushed}")' in snippet(pushed)  # the snippet names where the run was published
    code = snippet(pushed).replace("max_new_tokens=128", "max_new_tokens=2") + "\nprint('generated')"
    done = run_offline(code, {"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0 and "generated" in done.stdout, done.stderr[-2000:]


def test_a_reward_models_card_shows_how_to_score_and_its_snippet_gives_redlines_score(tmp_path):
    run = tmp_path / "rm"
    model = load_reward_model("tiny-random", device="cpu")
    model.config.reward_bias = 0.25
    tokenizer = load_tokenizer("tiny-random")
    save_model(model, tokenizer, run, ModelCard(kind="reward", base_model="tiny-random"))
    meta = card_metadata(run)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert "base_model" not in meta  # tiny-random has no hub id: no made-up one
    text = (run / "README.md").read_text()
    assert "add_special_tokens=False" in text and "reward_bias" in text
    scope: dict = {}
    exec(snippet(run), scope)  # noqa: S102 - the card's own code, run as a user would
    chat = [{"role": "user", "content": "Write a haiku about rain."}, {"role": "assistant", "content": "Soft rain on the roof..."}]
    expected = score_texts(model, tokenizer, [chat_text(tokenizer, chat[:1], chat[1]["content"])])[0]
    assert scope["reward"] == pytest.approx(expected, abs=1e-5)


def test_push_to_hub_refuses_what_is_neither_a_repo_id_nor_a_folder(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(RedlineError, match="not a hub repo id"):
        push_to_hub(tmp_path / "run", "not a repo")
    with pytest.raises(RedlineError, match="the run folder itself"):
        push_to_hub(tmp_path / "run", str(tmp_path / "run"))


def test_a_push_over_an_earlier_copy_replaces_it_and_a_folder_of_other_files_is_refused(tmp_path):
    """A full model's copy over an adapter's kept the adapter's files, and loaders read those."""
    adapter_run, full_run, dest = tmp_path / "adapter", tmp_path / "full", tmp_path / "pub"
    for run, files in ((adapter_run, ("adapter_config.json", "adapter_model.safetensors")), (full_run, ("model.safetensors",))):
        run.mkdir()
        (run / "redline.json").write_text(json.dumps({"kind": "sft", "from": run.name}))
        for name in files:
            (run / name).write_text(run.name)
    (adapter_run / "checkpoints").mkdir()
    push_to_hub(adapter_run, str(dest))
    assert sorted(p.name for p in dest.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "redline.json"]
    push_to_hub(full_run, str(dest))
    assert sorted(p.name for p in dest.iterdir()) == ["model.safetensors", "redline.json"]
    assert json.loads((dest / "redline.json").read_text())["from"] == "full"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nothing left beside it
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(RedlineError, match="not a published run"):
        push_to_hub(full_run, str(other))
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_a_damaged_card_is_named_by_its_file(tmp_path, capsys):
    run = tmp_path / "broken"
    run.mkdir()
    (run / "redline.json").write_text('{"kind": "sft",\n')
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n")
    assert main(["generate", "--model", str(run), "--prompts", str(prompts), "--out", str(tmp_path / "g.jsonl")]) == 2
    assert f"{run / 'redline.json'}: not JSON" in capsys.readouterr().err  # was a bare "Expecting property name ..."


def test_a_run_on_a_base_folder_given_relative_loads_from_any_directory_and_moves_with_it(tmp_path, monkeypatch):
    """`train sft --model base` names a folder from where it ran only: read from another working directory, the
    run found no base. Its card names the folder absolutely (adapter_config.json too, for plain PEFT) and from the
    run's own folder, so the two move together; a run an older redline saved so loads through its fingerprint."""
    import shutil

    import torch
    from peft import AutoPeftModelForCausalLM

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    save_model(load_causal_lm("tiny-random", device="cpu"), load_tokenizer("tiny-random"), project / "base",
               ModelCard(kind="sft", base_model="tiny-random"))  # a whole model in a folder
    (project / "d.jsonl").write_text("".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) + "\n" for i in range(4)))
    elsewhere.mkdir()
    monkeypatch.chdir(project)
    assert main(["train", "sft", "--data", "d.jsonl", "--model", "base", "--out", "runs/sft", "--max-steps", "1",
                 "--learning-rate", "1e-2", "--device", "cpu"]) == 0
    run = project / "runs" / "sft"
    card = json.loads((run / "redline.json").read_text())
    assert card["adapter"] and (card["base_model"], card["base_path"]) == (str(project / "base"), "../../base")
    assert json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"] == str(project / "base")
    ids = load_tokenizer("base")(["hello world"], return_tensors="pt")["input_ids"]

    def logits(model) -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=ids).logits

    expected = logits(load_causal_lm("runs/sft", device="cpu"))
    monkeypatch.chdir(elsewhere)
    assert torch.allclose(logits(load_causal_lm(str(run), device="cpu")), expected, atol=1e-5)
    assert torch.allclose(logits(AutoPeftModelForCausalLM.from_pretrained(str(run))), expected, atol=1e-5)

    # a card as redline wrote it before: the base as given, from where the run trained; its fingerprint knows where
    old = {**card, "base_model": "base"}
    del old["base_path"]
    (run / "redline.json").write_text(json.dumps(old))
    assert torch.allclose(logits(load_causal_lm(str(run), device="cpu")), expected, atol=1e-5)
    (run / "redline.json").write_text(json.dumps(card))

    # the project moved (copied to another machine): the run finds its base beside it, not where it was
    shutil.move(project, tmp_path / "moved")
    moved = load_causal_lm(str(tmp_path / "moved" / "runs" / "sft"), device="cpu")
    assert torch.allclose(logits(moved), expected, atol=1e-5)
