"""Copy a trained critic, reward-model or reward-gap run into ``models/``, where `redline demo` (and users) find it.

    python scripts/ship_model.py runs/critic1000 [--to models/critic] [--notes "..."]
    python scripts/ship_model.py runs/igpt2/rm   [--to models/reward] [--notes "..."]
    python scripts/ship_model.py runs/pit2/gap   [--to models/gap]    [--notes "..."]

What travels: the LoRA adapter with its weights stored in bfloat16 (half the bytes; the demo
generates in bfloat16 anyway, and PEFT casts them back to the base's dtype on loading), its
``adapter_config.json``, the tokenizer files, ``train_config.json``, ``train_log.jsonl``,
``training_curve.png``, and ``redline.json`` and the card rewritten so that data paths inside this
checkout are relative to it and the run's own folder reads ``runs/<name>`` (no machine's absolute paths in the
repository). Checkpoints stay behind.
A reward (or reward-gap) run saves its model merged (538 MB for the embedded model); its adapter (LoRA and the score
head) is taken from the last checkpoint, which must be the run's last step, and ``redline.json``
then says ``adapter: true`` (``load_reward_model`` adds the run's ``reward_bias`` from its metrics).
Why a script and not `--push-to-hub models/critic`: that copies the run as it is (float32 weights,
absolute paths), which is right for a user's own runs but not for a file the repository keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("adapter_config.json", "train_config.json", "train_log.jsonl", "training_curve.png", "tokenizer.json",
          "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


SCORING = ("reward", "gap-reward")  # runs saved merged: the adapter is taken from the last checkpoint
DESTINATION = {"critic": "critic", "reward": "reward", "gap-reward": "gap"}  # run kind -> models/<folder>


def relative(path: str) -> str:
    """``path`` relative to the checkout when it lies inside it (the run may come from a worktree of it)."""
    p = Path(path)
    for root in (ROOT, *ROOT.parents):
        if (root / ".git").exists() and p.is_absolute() and p.is_relative_to(root):
            return str(p.relative_to(root))
    return path


def portable_command(command: str, run: Path) -> str:
    """The recorded command with paths inside the checkout made relative and the run's own folder (``--out``)
    written ``runs/<name>`` when it lies outside it: no machine's absolute paths in the repository's card."""
    own = run.resolve()
    words = []
    for word in shlex.split(command):
        portable = relative(word)
        if portable == word and word.startswith("/") and Path(word).resolve() == own:
            portable = f"runs/{own.name}"
        words.append(portable)
    return shlex.join(words)


def last_checkpoint(run: Path, info: dict) -> Path:
    """A merged reward run's adapter: its newest complete checkpoint, refused unless it is the run's last step."""
    from redline import RedlineError
    from redline.train.sft import last_checkpoint as newest

    found, steps = newest(run), info.get("metrics", {}).get("steps")
    if found is None or not (Path(found) / "adapter_model.safetensors").exists():
        raise RedlineError(f"{run}: no complete checkpoint holding a LoRA adapter (a run trained with --no-lora "
                           "has no adapter to ship)")
    if steps is None or int(Path(found).name.split("-")[1]) != steps:
        raise RedlineError(f"{run}: its last checkpoint is {Path(found).name}, not the run's last step ({steps}); "
                           "the adapter there is not the model the run saved")
    return Path(found)


def ship(run: Path, to: Path, notes: str = "") -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    from redline import RedlineError
    from redline.models import RUN_INFO, ModelCard, hub_id, local_folder, run_info
    from redline.records import json_text, write_text_atomic

    if not (run / RUN_INFO).is_file():
        raise RedlineError(f"{run}: no {RUN_INFO}: not a finished `redline train` run folder")
    info = run_info(run)
    adapter = run
    if info.get("kind") in SCORING and not info.get("adapter"):
        adapter = last_checkpoint(run, info)
        info["adapter"] = True
    elif info.get("kind") not in DESTINATION or not info.get("adapter"):
        raise RedlineError(f"{run}: not a LoRA critic, reward or gap-reward run (redline.json says kind "
                           f"{info.get('kind')!r}, adapter {info.get('adapter')!r})")
    if to.exists() and not to.is_dir():
        raise RedlineError(f"--to {to}: a file, not a folder for the shipped model")
    if to.exists():
        if to.resolve() == run.resolve() or run.resolve().is_relative_to(to.resolve()):
            raise RedlineError(f"--to {to}: it holds the run {run}, which replacing it would delete")
        if any(to.iterdir()) and not (to / RUN_INFO).is_file():
            raise RedlineError(f"--to {to}: a folder that is not a shipped model (no {RUN_INFO}); replacing it would "
                               "delete what it holds: name the model's own folder, e.g. models/critic")
    # what the copy needs, checked before a previous shipped model in ``to`` is removed
    lacking = [name for name in ("adapter_model.safetensors", "adapter_config.json") if not (adapter / name).is_file()]
    if lacking:
        raise RedlineError(f"{adapter}: no {lacking[0]}: the adapter is not all there")
    if to.exists():
        shutil.rmtree(to)
    to.mkdir(parents=True)
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in weights.items()}, str(to / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    for name in COPIED:
        source = adapter / name if name == "adapter_config.json" else run / name
        if source.exists():
            shutil.copy2(source, to / name)
    adapter_config = json.loads((to / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = hub_id(info["base_model"])  # not this machine's cache folder
    (to / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")
    config = json.loads((to / "train_config.json").read_text()) if (to / "train_config.json").exists() else None
    if config and "data" in config:
        config["data"] = relative(config["data"])
        (to / "train_config.json").write_text(json.dumps(config, indent=2) + "\n")
    info["data"] = [relative(d) for d in info.get("data", [])]
    info["reads"] = {relative(k): v for k, v in info.get("reads", {}).items()}
    if info.get("command"):
        info["command"] = portable_command(info["command"], run)
    info["notes"] = notes or info.get("notes", "")
    # a base folder's path from the run's folder (models.run_base) is not its path from here: named from `to`
    info["base_path"] = os.path.relpath(info["base_model"], to.resolve()) if local_folder(info.get("base_model", "")) else ""
    card = ModelCard(**{f.name: info[f.name] for f in fields(ModelCard) if f.name in info})
    # as save_model writes them: a NaN metric as null, the card in UTF-8 (its '–' for a metric of None)
    write_text_atomic(to / RUN_INFO, json_text(info, indent=2) + "\n")
    write_text_atomic(to / "README.md", card.markdown(relative(str(to.resolve()))))
    return to


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a `redline train critic`, `train reward` or `train gap-reward` run folder (LoRA)")
    ap.add_argument("--to", type=Path, default=None, help="default models/critic, models/reward or models/gap, by the run's kind")
    ap.add_argument("--notes", default="", help="what the card should say beside the metrics (how it was measured)")
    args = ap.parse_args(argv)
    from redline import RedlineError

    try:
        from redline.models import run_info

        kind = run_info(args.run).get("kind")
        out = ship(args.run, args.to or ROOT / "models" / DESTINATION.get(kind, "critic"), args.notes)
    except RedlineError as e:
        print(f"ship_model: {e}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"shipped {args.run} to {out} ({size:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
