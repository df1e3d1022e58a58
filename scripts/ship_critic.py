"""Copy a trained critic run into ``models/critic/``, the critic `redline demo` revises with.

    python scripts/ship_critic.py runs/critic1000 [--to models/critic] [--notes "..."]

What travels: the LoRA adapter with its weights stored in bfloat16 (half the bytes; the demo
generates in bfloat16 anyway, and PEFT casts them back to the base's dtype on loading), its
``adapter_config.json``, the tokenizer files, ``train_config.json``, ``train_log.jsonl``,
``training_curve.png``, and ``redline.json`` and the card rewritten so that data paths inside this
checkout are relative to it (no machine's absolute paths in the repository). Checkpoints stay behind.
Why a script and not `--push-to-hub models/critic`: that copies the run as it is (float32 weights,
absolute paths), which is right for a user's own runs but not for a file the repository keeps.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("adapter_config.json", "train_config.json", "train_log.jsonl", "training_curve.png", "tokenizer.json",
          "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def relative(path: str) -> str:
    """``path`` relative to the checkout when it lies inside it (the run may come from a worktree of it)."""
    p = Path(path)
    for root in (ROOT, *ROOT.parents):
        if (root / ".git").exists() and p.is_absolute() and p.is_relative_to(root):
            return str(p.relative_to(root))
    return path


def ship(run: Path, to: Path, notes: str = "") -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    from redline import RedlineError
    from redline.models import RUN_INFO, ModelCard, run_info

    info = run_info(run)
    if info.get("kind") != "critic" or not info.get("adapter"):
        raise RedlineError(f"{run}: not a LoRA critic run (redline.json says kind {info.get('kind')!r}, "
                           f"adapter {info.get('adapter')!r})")
    if to.exists():
        shutil.rmtree(to)
    to.mkdir(parents=True)
    weights = load_file(str(run / "adapter_model.safetensors"))
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in weights.items()}, str(to / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    for name in COPIED:
        if (run / name).exists():
            shutil.copy2(run / name, to / name)
    config = json.loads((to / "train_config.json").read_text()) if (to / "train_config.json").exists() else None
    if config and "data" in config:
        config["data"] = relative(config["data"])
        (to / "train_config.json").write_text(json.dumps(config, indent=2) + "\n")
    info["data"] = [relative(d) for d in info.get("data", [])]
    info["reads"] = {relative(k): v for k, v in info.get("reads", {}).items()}
    info["notes"] = notes or info.get("notes", "")
    card = ModelCard(**{f.name: info[f.name] for f in fields(ModelCard) if f.name in info})
    (to / RUN_INFO).write_text(json.dumps(info, indent=2) + "\n")
    (to / "README.md").write_text(card.markdown(relative(str(to.resolve()))))
    return to


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a `redline train critic` run folder (LoRA)")
    ap.add_argument("--to", type=Path, default=ROOT / "models" / "critic")
    ap.add_argument("--notes", default="", help="what the card should say beside the metrics (how it was measured)")
    args = ap.parse_args(argv)
    from redline import RedlineError

    try:
        out = ship(args.run, args.to, args.notes)
    except RedlineError as e:
        print(f"ship_critic: {e}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"shipped {args.run} to {out} ({size:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
