"""Config dataclasses as command-line flags: one dataclass per command is the single source of truth.

Each field becomes a flag (``lora_r`` → ``--lora-r``; a bool gets ``--x`` and ``--no-x``) with the
field's help text; values a user did not give keep the dataclass defaults. ``--config FILE``
starts from a resolved config that a run wrote next to its outputs, so a run can be repeated.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from redline import RedlineError


def settings_from_args(cls, args) -> Any:
    """Build a config dataclass from argparse values, taking only the fields the user gave.

    ``--config RUN/train_config.json`` loads a resolved config first; flags given on the command line
    override it.
    """
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(json.loads(Path(args.config).read_text()))
    for f in fields(cls):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise RedlineError(f"unknown config fields {sorted(unknown)} for {cls.__name__}")
    return cls(**values)


def add_settings_arguments(parser, cls, skip: tuple[str, ...] = ()) -> None:
    """One flag per config field (``--lora-r``, ``--no-lora`` ...), help text from the dataclass."""
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if f.type in ("bool", bool):
            parser.add_argument(flag, dest=f.name, action="store_true", default=None, help=help_text)
            parser.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false", help=f"do not: {help_text}")
            continue
        kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(str(f.type), str)
        parser.add_argument(flag, dest=f.name, type=kind, default=None, help=f"{help_text} (default: {f.default})")
