"""Config dataclasses as command-line flags: one dataclass per command is the single source of truth.

Each field becomes a flag (``lora_r`` → ``--lora-r``; a bool gets ``--x`` and ``--no-x``) with the
field's help text and a type taken from its annotation (``int | None`` reads an int); values a user
did not give keep the dataclass defaults. A field's metadata says more:

    help        the flag's help text
    required    the run cannot start without it (checked here, whichever way the value came)
    min, max    the range of a number, refused at parse time (``--limit 0``, ``--lora-r 10**30``)
    choices     the values allowed
    list_of     a string field that holds a comma-separated list of this type (``--sizes 100,250``): each item is
                checked (type, range) as the flag is read, and the string is kept as given
    aliases     other spellings of the flag
    positional  given as a positional argument (``data validate FILE``) rather than a flag; optional to
                argparse, so that a ``--config`` file may give it instead, and checked here if required
    result      False for a setting that does not change what the run computes (threads, logging,
                checkpoint spacing): a resumed run may change it; every other field is part of the
                run's fingerprint
    unless      another field that makes this one moot (``eval_split`` applies unless ``eval_data`` is
                given): the two given together are refused, never settled by one silently winning
                (``check_unless``). A flag counts as given; a config file's value only where it is not the
                field's default, as a run's resolved config holds every field. A flag of either one
                replaces the config file's value of the other, as flags override the file
    read_first  the command reads this input before it claims its output, so OUT may hold it (``evaluate
                table`` grows its own table.json): not refused as an input inside OUT (``claim_output``)

``--config FILE`` (YAML or JSON) starts from a file of field values, such as the resolved config a run
wrote beside its outputs; flags given on the command line override it. ``--overwrite`` starts a
resumable run over instead of refusing an output that holds a run with another fingerprint
(``claim_output``); an output that is, or holds, one of the run's inputs is refused either way.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from redline import RedlineError
from redline.models import EMBEDDED, TINY_RANDOM, read_json_object
from redline.records import split_source, write_text_atomic

FINGERPRINT = "fingerprint.json"
# an older redline's run folder holds one of these (and `--overwrite` removes only a folder that does)
RUN_MARKERS = ("train_config.json", "redline.json", "summary.json", "iteration_0.jsonl", "judgments.jsonl",
               "manifest.json", "pit.json", "results.json")
NOT_CONTENT = (".DS_Store", ".gitkeep")  # what a file browser or a repository leaves in an empty folder


# ----------------------------------------------------------------------------- flags

# Every command's --seed takes numpy's range, which transformers.set_seed (every Trainer) and evaluate's bootstrap
# need: outside it a trainer failed once its model had loaded, and evaluate once every pair was judged.
SEED_MAX = 2**32 - 1


def seed_field(help: str) -> Any:
    """``--seed``, as every command declares it: 0 (the default) to ``SEED_MAX``."""
    return dataclasses.field(default=0, metadata={"min": 0, "max": SEED_MAX, "help": help})


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(annotation) -> tuple[Any, bool]:
    """(the type a flag parses, whether None is allowed): ``int | None`` → (int, True)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), True
    return annotation, False


def _sequence_item(annotation) -> Any | None:
    """The item type of ``tuple[str, ...]`` or ``list[int]``, else None."""
    if typing.get_origin(annotation) in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return args[0] if args else str
    return None


def _convert(f: dataclasses.Field, annotation, value: Any) -> Any:
    """``value`` (a flag's string or a config file's value) as the field's type, in range; ValueError says why."""
    kind, optional = _base_type(annotation)
    if value is None:
        if optional:
            return None
        raise ValueError("may not be null")
    item = _sequence_item(kind)
    if item is not None:
        return tuple(_list_items(f, item, value))
    if f.metadata.get("list_of") and isinstance(value, str):
        if not _list_items(f, f.metadata["list_of"], value):  # checked; kept as given (the run's config, fingerprint)
            raise ValueError(f"names nothing, got {value!r}")
        return value
    return _convert_scalar(f, kind, value)


def _list_items(f: dataclasses.Field, item, value: Any) -> list:
    """The items of a list value (a comma-separated string, or a config file's list), each converted and checked.
    An item given twice is refused, as ``--rounds 0,0`` is: ``--sizes 2,2`` ran the one size twice and reported it
    once, and ``--types a,a`` drew ``a`` twice as often, each without a word."""
    parts = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)):
        raise ValueError(f"expected a list or a comma-separated string, got {value!r}")
    items = [_convert_scalar(f, item, p) for p in parts]
    for i, x in enumerate(items):
        if x in items[:i]:
            raise ValueError(f"{x} is given twice in {value if isinstance(value, str) else ','.join(map(str, value))!r}"
                             " (name each once)")
    return items


def field_value(cls, name: str, value: Any) -> Any:
    """``value`` as field ``name`` of ``cls`` takes it, converted and checked as a flag or a config
    file's value is (type, range, choices); ValueError says why, KeyError for an unknown field."""
    f = {f.name: f for f in fields(cls)}[name]
    return _convert(f, _hints(cls)[name], value)


def _convert_scalar(f: dataclasses.Field, kind, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"expected true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"expected {'an integer' if kind is int else 'a number'}, got {value!r}")
        try:
            number = kind(value) if not (kind is int and isinstance(value, float)) else None
        except (TypeError, ValueError):
            number = None
        if number is None or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"expected {'an integer' if kind is int else 'a number'}, got {value!r}")
        if kind is float and not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {value!r}")  # nan or inf would make every loss nan
        low, high = f.metadata.get("min"), f.metadata.get("max")
        if low is not None and number < low:
            raise ValueError(f"must be at least {low}, got {value}")
        if high is not None and number > high:
            raise ValueError(f"must be at most {high}, got {value}")
        value = number
    elif kind is Path:
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"expected a path, got {value!r}")
        value = Path(value)
    elif not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ValueError(f"{value!r} is not one of {', '.join(map(str, choices))}")
    return value


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(f: dataclasses.Field) -> str:
    """How the command line spells a field: ``--lora-r``, or ``FILE`` for a positional one."""
    return f.name.upper() if f.metadata.get("positional") else flag_name(f.name)


def add_settings_arguments(parser, cls, skip: tuple[str, ...] = (), *, resumable: bool = True, config: bool = True) -> None:
    """One flag per config field (``--lora-r``, ``--no-lora`` ...), help text from the dataclass, plus
    ``--config FILE`` and, for a command whose output resumes, ``--overwrite``."""
    hints = _hints(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = flag_name(f.name)
        help_text = f.metadata.get("help", "")
        if f.metadata.get("required"):
            help_text += " (required)"
        kind, _ = _base_type(hints[f.name])
        if kind is bool:  # the flag a run gets unless told otherwise says so
            on, off = {True: (" (default)", ""), False: ("", " (default)")}.get(f.default, ("", ""))
            parser.add_argument(flag, dest=f.name, action="store_true", default=None, help=help_text + on)
            parser.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                                help=f"do not: {help_text}{off}")
            continue

        def parse(text: str, f=f, annotation=hints[f.name]) -> Any:
            try:
                return _convert(f, annotation, text)
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None

        parse.__name__ = getattr(kind, "__name__", "value")  # argparse names the type in its errors
        if f.metadata.get("positional"):
            parser.add_argument(f.name, nargs="?", type=parse, default=None, metavar=f.name.upper(),
                                help=help_text.replace("%", "%%"))
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        # A help text that says its own default ("peak lr (default: 2e-4 LoRA, 2e-5 full)") is not contradicted
        # by the field's placeholder: "(default: None)" after it read as a second, other default. An unset
        # field (None, "") says nothing: "(default: None)" or "(default: )" named no value a user could give;
        # a help text says what unset means where the flag's own words do not.
        unset = default is None or default == ""
        shown = "" if f.metadata.get("required") or unset or "default:" in help_text else f" (default: {default})"
        parser.add_argument(flag, *f.metadata.get("aliases", ()), dest=f.name, type=parse, default=None,
                            help=f"{help_text}{shown}".replace("%", "%%"))
    if config:
        parser.add_argument("--config", metavar="FILE",
                            help="a YAML or JSON file of settings (such as the config a run wrote beside its outputs); flags override it")
    if resumable:
        parser.add_argument("--overwrite", action="store_true",
                            help="delete what the output holds and start over, a finished or part-way run with the same settings too "
                                 "(default: resume a run with these settings, refuse one with others)")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different: a key given twice took its last value silently."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise KeyError(key)
        out[key] = value
    return out


def _unique_keys_loader():
    """yaml's SafeLoader refusing a key given twice in one mapping (it kept the last value silently: a second
    ``model:`` line trained another model than the one the reader saw first)."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: merged, and may be overridden
                    continue
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the field {key!r} is given twice (which one holds?)", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeys


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping of a YAML (``.yaml``/``.yml``) or JSON file; one clear error naming the file otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RedlineError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RedlineError(f"{path}: cannot read the config file: {e}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            values = yaml.load(text, Loader=_unique_keys_loader())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise RedlineError(f"{path}{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    else:
        try:
            values = json.loads(text, object_pairs_hook=_unique_pairs)
        except json.JSONDecodeError as e:
            raise RedlineError(f"{path}:{e.lineno}: not valid JSON: {e.msg} (a .yaml or .yml file is read as YAML)") from None
        except KeyError as e:
            raise RedlineError(f"{path}: the field {e.args[0]!r} is given twice (which one holds?)") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise RedlineError(f"{path}: a config file holds a mapping of field: value, got {type(values).__name__}")
    return values


def settings_from_args(cls, args) -> Any:
    """Build a config dataclass from argparse values, taking only the fields the user gave.

    ``--config FILE`` loads field values first (each checked like its flag); flags given on the
    command line override them; then every field marked ``required`` must have a value.
    """
    hints = _hints(cls)
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    source = getattr(args, "config", None)
    if source:
        for name, value in load_config_file(source).items():
            if name not in known:
                raise RedlineError(f"{source}: unknown field {name!r} (known: {', '.join(known)})")
            try:
                values[name] = _convert(known[name], hints[name], value)
            except ValueError as e:
                raise RedlineError(f"{source}: {name}: {e}") from None
    flags = {name for name in known if getattr(args, name, None) is not None}
    for f in fields(cls):  # a flag of one of two exclusive fields replaces the file's choice of the other
        other = f.metadata.get("unless")
        if other and (f.name in flags) != (other in flags):
            values.pop(other if f.name in flags else f.name, None)
    values.update({name: getattr(args, name) for name in flags})
    given = flags | {name for name, value in values.items() if _given(known[name], value)}
    _refuse_both(cls, given, lambda name: "on the command line" if name in flags else f"in {source}")
    for f in fields(cls):
        if f.metadata.get("required") and not values.get(f.name) and f.default in (dataclasses.MISSING, None, ""):
            raise RedlineError(f"{_shown(f)} is required: {f.metadata.get('help', f.name)}")
    try:
        return cls(**values)
    except TypeError as e:
        raise RedlineError(f"{cls.__name__}: {e}") from None


def check_required(config) -> None:
    """Every field its metadata marks ``required`` has a value, and every value is in its range and choices
    (``check_values``): for configs built in Python, which ``settings_from_args`` did not check."""
    for f in fields(config):
        if f.metadata.get("required") and not getattr(config, f.name):
            raise RedlineError(f"{_shown(f)} is required: {f.metadata.get('help', f.name)}")
    check_values(config)


def check_values(config) -> None:
    """Each number within its field's ``min``/``max`` (and finite), each value among its ``choices``: what a flag or a
    config file is held to, for a config built in Python (``ImproveConfig(max_new_tokens=0)`` gave every item a
    one-token budget). Types are left alone: Python callers pass paths and lists where a flag gives strings."""
    for f in fields(config):
        value = getattr(config, f.name)
        numbers = value if isinstance(value, (list, tuple)) else [value]
        for number in numbers:
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                continue
            low, high = f.metadata.get("min"), f.metadata.get("max")
            if not math.isfinite(number) or (low is not None and number < low) or (high is not None and number > high):
                bounds = " and ".join(b for b in (low is not None and f"at least {low}", high is not None and f"at most {high}") if b)
                raise RedlineError(f"{_shown(f)} must be {bounds or 'finite'}, got {number}")
        choices = f.metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise RedlineError(f"{_shown(f)}: {value!r} is not one of {', '.join(map(str, choices))}")


def _given(f: dataclasses.Field, value: Any) -> bool:
    """Whether a field's value says more than its default (a run's resolved config holds every field)."""
    return value not in (None, "") and (f.default is dataclasses.MISSING or value != f.default)


def _refuse_both(cls, given: set[str], where) -> None:
    for f in fields(cls):
        other = f.metadata.get("unless")
        if other and f.name in given and other in given:
            said = "; ".join(f"{flag_name(n)} {where(n)}" for n in (other, f.name))
            raise RedlineError(f"give {flag_name(other)} or {flag_name(f.name)}, not both ({said}): "
                               f"{flag_name(f.name)} is the {f.metadata.get('help', f.name)}")


def check_unless(config) -> None:
    """No field is given beside the one that makes it moot (metadata ``unless``): for configs built in
    Python, which ``settings_from_args`` did not check; a value other than the default counts as given."""
    given = {f.name for f in fields(config) if _given(f, getattr(config, f.name))}
    _refuse_both(type(config), given, lambda name: f"= {getattr(config, name)!r}")
    check_values(config)


def config_dict(config) -> dict[str, Any]:
    """The resolved config as JSON-ready data (paths and tuples as strings and lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def write_config(path: str | os.PathLike, config) -> Path:
    """The resolved config, for ``--config`` to repeat the run."""
    return _write_if_changed(Path(path), json.dumps(config_dict(config), indent=2) + "\n")


def _write_if_changed(path: Path, text: str) -> Path:
    """Write ``text`` (atomically: never torn) unless ``path`` holds it already: a rerun that changes nothing
    leaves a finished run's folder as it was."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return path
    except (OSError, UnicodeDecodeError):
        pass
    return write_text_atomic(path, text)


# ----------------------------------------------------------------------------- fingerprints


def _digest_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


# What a folder's digest leaves out: a model card describes the model (its figures, how it is used) and is edited
# after training; editing it must not make a run that read the model refuse to resume.
DOCUMENTATION = frozenset({"README.md"})
# What a run writes about itself, not what a reader of its model reads: a rerun rewrites them (free settings such as
# --threads, the path as typed, another log line), and counting them made a no-op rerun of an upstream run strand
# every run that read it. Left out from the fourth form on, at any depth (a `train pit` run's stages).
BOOKKEEPING = frozenset({FINGERPRINT, "train_config.json", "train_log.jsonl", "training_curve.png"})
RUN_CARD, CARD_STAMP = "redline.json", ("date", "command")  # the card is read without when and how it was written
# The digest's forms, oldest first: "folder-sha256:" counted the model card (before the twentieth session),
# "folder-sha256/2:" read only small JSON files' content (the thirty-first: an edit of DATA/test.jsonl that kept
# its size went unseen), "folder-sha256/3:" counted BOOKKEEPING and the card's date, and knew weights by name and size
# only; "folder-sha256/4:" read a command's resolved config.json whole (``_resolved_config``); a run that recorded an
# older form is compared in that form (``same_input``). A folder without such a config.json (a model run) has the
# same digest in the fifth form as in the fourth, written as the fourth's, so no recorded digest of it went stale.
FOLDER_DIGESTS = ("folder-sha256:", "folder-sha256/2:", "folder-sha256/3:", "folder-sha256/4:", "folder-sha256/5:")
FOLDER_DIGEST = FOLDER_DIGESTS[3]  # what a folder without a resolved config.json is digested as, in the newest form
RESOLVED_CONFIG = "config.json"  # what ``claim_output`` writes beside a command's outputs (``configured``'s default)
WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack", ".onnx")
READ_WHOLE = 64 << 20  # a file under this, not weights, is digested by its content
SAMPLE_ENDS, SAMPLE_BLOCK, SAMPLE_BLOCKS = 1 << 20, 64 << 10, 16  # what a weights file is known by (``_sample``)


def _digest_folder(folder: Path, *, form: int = len(FOLDER_DIGESTS)) -> str:
    """A folder (a model run, a data folder): every file's name and size, and the content of every file that is
    not weights and under ``READ_WHOLE`` (data, configs, tokenizers, the run's card); weights and larger files by a
    sample of their bytes (``_sample``), as hashing gigabytes on every resume would cost minutes. Checkpoints,
    hidden files, the model card (``DOCUMENTATION``) and a run's notes about itself (``BOOKKEEPING``, and the
    card's ``CARD_STAMP``) are left out, and a command's resolved config.json is read for its settings alone
    (``_resolved_config``). ``form``: 1 to 4, the older digests (``FOLDER_DIGESTS``), for runs that recorded them."""
    h = hashlib.sha256()
    resolved_seen = False
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or rel.parts[0] in ("checkpoints",) or any(p.startswith(".") for p in rel.parts):
            continue
        if (form > 1 and rel.as_posix() in DOCUMENTATION) or (form > 3 and path.name in BOOKKEEPING):
            continue
        size = path.stat().st_size
        card = _card(path) if form > 3 and path.name == RUN_CARD and size < READ_WHOLE else None
        if form > 4 and path.name == RESOLVED_CONFIG and size < READ_WHOLE:
            card = _resolved_config(path)
            resolved_seen = resolved_seen or card is not None
        h.update(f"{rel.as_posix()}\0{size if card is None else len(card)}\0".encode())
        if form < 3:
            if path.suffix == ".json" and size < 1 << 20:
                h.update(path.read_bytes())
        elif card is not None:
            h.update(card)
        elif path.suffix not in WEIGHTS and size < READ_WHOLE:
            h.update(path.read_bytes())
        elif form > 3:
            h.update(_sample(path, size))
    return (FOLDER_DIGEST if form == len(FOLDER_DIGESTS) and not resolved_seen else FOLDER_DIGESTS[form - 1]) + h.hexdigest()


def _resolved_config(path: Path) -> bytes | None:
    """A command's config.json beside its fingerprint.json (a `simulate build` folder read as ``--data``) as canonical
    JSON of the settings that change results: a rerun that built nothing new rewrites it with its free settings
    (``--device``, ``--no-progress``), ``--out`` and the inputs as now spelt, which made every run that read the folder
    refuse to resume. None for any other config.json (a model's, which its keys tell apart)."""
    try:
        config = json.loads(path.read_bytes())
        stamp = json.loads((path.parent / FINGERPRINT).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or not isinstance(stamp, dict) or not isinstance(stamp.get("settings"), dict):
        return None
    names = set(stamp["settings"]) | set(stamp.get("inputs") or ()) | set(stamp.get("free") or ())
    if set(config) != names:
        return None
    return json.dumps({k: config[k] for k in stamp["settings"]}, sort_keys=True).encode()


def _card(path: Path) -> bytes:
    """A run's redline.json as canonical JSON without ``CARD_STAMP``: a rerun that trains nothing new may write
    it again under another date and command line. Not JSON: its bytes."""
    data = path.read_bytes()
    try:
        card = json.loads(data)
    except ValueError:
        return data
    if not isinstance(card, dict):
        return data
    return json.dumps({k: v for k, v in card.items() if k not in CARD_STAMP}, sort_keys=True).encode()


def _sample(path: Path, size: int) -> bytes:
    """A weights file (or any file over ``READ_WHOLE``) by its first and last MiB and 16 evenly spaced 64 KiB blocks
    between: other weights of the same size (a retrain changes every tensor) differ there, for milliseconds where
    reading gigabytes whole would cost minutes. A change confined to bytes between the blocks goes unseen."""
    spots = [(0, SAMPLE_ENDS), (max(size - SAMPLE_ENDS, 0), SAMPLE_ENDS)]
    spots += [(size * i // (SAMPLE_BLOCKS + 1), SAMPLE_BLOCK) for i in range(1, SAMPLE_BLOCKS + 1)]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for offset, length in spots:
            f.seek(offset)
            h.update(f.read(length))
    return h.digest()


def same_input(now: dict[str, Any], then: dict[str, Any]) -> bool:
    """Whether an input (``{"path", "digest", "given"}``) is what a run read; a folder digest recorded in an older
    form (``FOLDER_DIGESTS``) is recomputed in that form, on the folder the value names (a judge spec's model too).
    A data folder's split must be the same; a list of inputs (``items``) is compared item by item."""
    if now.get("split") != then.get("split"):
        return False
    if "items" in now or "items" in then:
        return not changed_items(now, then)
    if spec_options(now.get("given", "")) != spec_options(then.get("given", "")):
        return False
    if now["digest"] == then["digest"]:
        return True
    path = named_path(now.get("given", now["path"]))
    older = [form for form, prefix in enumerate(FOLDER_DIGESTS[:-1], start=1) if then["digest"].startswith(prefix)]
    return bool(older) and path is not None and path.is_dir() and _digest_folder(path, form=older[0]) == then["digest"]


def changed_items(now: dict[str, Any], then: dict[str, Any]) -> list[str]:
    """The items of a list of inputs (``a.jsonl,b.jsonl``; ``reward:rm,oracle``) that are not what the run read, as
    given; every item when the two lists differ in length or one is a single input."""
    a, b = now.get("items"), then.get("items")
    if a is None or b is None or len(a) != len(b):
        return [item["given"] for item in a or [now]]

    def same(x: dict[str, Any], y: dict[str, Any]) -> bool:  # by content where both name something here, else as text
        if "digest" in x and "digest" in y:
            return same_input(x, y)
        return "digest" not in x and "digest" not in y and same_text(x["given"], y["given"])

    return [x["given"] for x, y in zip(a, b) if not same(x, y)]


# Judge specs whose body is a model on this machine: its content, not the spec's text, is what a run read
# (a reward model retrained in place is another judge).
MODEL_SPECS = ("reward:",)


def spec_options(given: str) -> str:
    """The options of a judge spec on a model here that change its verdicts, as the judge's name writes them
    (``reward:rm?margin=1&device=cpu`` → ``margin=1``; ``device`` and ``batch_size`` change none); '' for anything
    else. The model's digest leaves them out: a run resumed under another margin, dtype or length mixed two judges."""
    if not isinstance(given, str) or not given.startswith(MODEL_SPECS) or "?" not in given:
        return ""
    from redline.judges import parse_judge

    try:
        return parse_judge(given).name.partition("?")[2]
    except RedlineError:  # not a spec the judge takes: compared as written
        return given.partition("?")[2]


# Options of a judge spec that change no verdict: how many calls go at once, how long one waits, where answers are
# cached, which variable holds the key, how the token cap is sent; the device and batch of a reward model. The judge's
# name, which its judgments file keeps, leaves them out, and a run may resume under others (a judge rate-limited
# at concurrency=8 goes on at 2).
FREE_JUDGE_OPTIONS = frozenset({"concurrency", "retries", "timeout", "backoff", "cache", "key_env", "token_param",
                                "device", "batch_size"})
JUDGE_KINDS = ("oracle", "openai:", "reward:")


def same_text(a: Any, b: Any) -> bool:
    """Whether two values of a setting are the same: equal, or the same judge specs (one, or a comma-separated list):
    the judges ``parse_judge`` makes of them have one name (options in ``FREE_JUDGE_OPTIONS``, and options at their
    defaults, leave it as it is); a spec it does not take is compared as written, but for its free options."""
    if a == b:
        return True
    if not isinstance(a, str) or not isinstance(b, str) or not a.startswith(JUDGE_KINDS):
        return False
    return [judge_identity(s) for s in a.split(",")] == [judge_identity(s) for s in b.split(",")]


def judge_identity(spec: str) -> Any:
    """What one judge spec names: its judge's name (``judge_name``: ``oracle:noisy?seed=0`` and ``oracle:noisy`` are
    one judge); for a spec that does not parse, the spec as written less its free options."""
    from redline.judges import judge_name

    spec = spec.strip()
    try:
        return judge_name(spec)
    except RedlineError:
        body, _, query = spec.partition("?")
        return body, sorted(o for o in query.split("&") if o and o.partition("=")[0] not in FREE_JUDGE_OPTIONS)


def named_path(value: Any) -> Path | None:
    """The file or folder a field's value names (a path, a ``reward:PATH?options`` judge spec, the folder of a
    ``FOLDER:split`` whose folder exists), else None. The built-in model names are never a folder here, as
    ``models.resolve`` reads no folder of that name."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        return None
    text = str(value).split("?")[0]  # os.path's tests, unlike Path's, take a setting too long for a name as False
    for prefix in MODEL_SPECS:
        if text.startswith(prefix) and os.path.exists(text[len(prefix):]):
            text = text[len(prefix):]
    if text in (EMBEDDED, TINY_RANDOM):
        return None
    if not os.path.exists(text):
        folder, split = split_source(text)
        if split and os.path.isdir(folder):
            text = folder
    return Path(text)


def input_digest(value: Any) -> str | None:
    """A digest of what a field's value names, when it names a file or folder on this machine; else None."""
    path = named_path(value)
    if path is None:
        return None
    try:
        if path.is_file():
            return _digest_file(path)
        if path.is_dir():
            return _digest_folder(path)
    except OSError:
        return None
    return None


def _input(value: Any) -> dict[str, Any] | None:
    """What a run records of an input: the path (resolved where the value is one), the digest, the value as given,
    and the split of a ``FOLDER:split``; None where the value names nothing on this machine."""
    digest = input_digest(value)
    if digest is None:
        return None
    given = str(value)
    path = named_path(given)
    record = {"path": str(Path(given).resolve()) if path == Path(given.split("?")[0]) else given, "digest": digest,
              "given": given}
    folder, split = split_source(given.split("?")[0])
    if split and path == Path(folder):
        record["split"] = split
    return record


def _inputs(value: Any) -> dict[str, Any] | None:
    """``_input`` of a value; for a comma-separated one naming several (``--responses a.jsonl,b.jsonl``, ``--judges
    reward:rm,oracle``), a list: each item as ``_input`` records it, or ``{"given"}`` for one that names nothing here
    (``oracle``), under one digest of them all. A value that names one path, commas and all, is that path."""
    record = _input(value)
    if record is not None or not isinstance(value, str) or "," not in value:
        return record
    items = [_input(part) or {"given": part} for part in (p.strip() for p in value.split(",")) if part]
    if not any("digest" in item for item in items):
        return None
    digest = hashlib.sha256(json.dumps([item.get("digest", item["given"]) for item in items]).encode()).hexdigest()
    return {"path": value, "digest": "list-sha256:" + digest, "given": value, "items": items}


def fingerprint(config, command: str) -> dict[str, Any]:
    """What determines a run's outputs: the settings that change results, and a digest of each input
    (a field whose value is a file or folder, or a list of them, is compared by content, not by the path's
    spelling)."""
    settings, inputs, free, defaults = {}, {}, [], {}
    values = config_dict(config)
    for f in fields(config):
        if f.metadata.get("result", True) is False:
            free.append(f.name)
            continue
        record = _inputs(getattr(config, f.name))
        if record is not None:
            inputs[f.name] = record
        else:
            settings[f.name] = values[f.name]
            if f.default is not dataclasses.MISSING and isinstance(f.default, (str, int, float, bool, type(None))):
                defaults[f.name] = f.default
    return {"command": command, "settings": settings, "inputs": inputs, "free": free, "defaults": defaults}


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, one phrase each."""
    out = []
    if before.get("command") != now.get("command"):
        out.append(f"command: `redline {now.get('command')}` here, `redline {before.get('command')}` there")
    old_settings, old_inputs = before.get("settings", {}), before.get("inputs", {})
    for name in sorted(set(now["settings"]) | set(now["inputs"]) | set(old_settings) | set(old_inputs)):
        if name in now.get("free", ()) or name in before.get("free", ()):
            continue
        if name in now["inputs"] or name in old_inputs:
            a, b = now["inputs"].get(name), old_inputs.get(name)
            if a and b and same_input(a, b):
                continue
            if a and not b and old_settings.get(name) == a.get("given"):
                continue  # a judge spec an older redline recorded as text: the same spec
            if a and b:
                out.append(_input_change(name, a, b))
            else:
                shown_now = a["path"] if a else now["settings"].get(name)
                shown_then = b["path"] if b else old_settings.get(name)
                out.append(f"{flag_name(name)}: {shown_now!r} here, {shown_then!r} in the run")
            continue
        if name not in old_settings and name in now.get("defaults", {}) and now["settings"][name] == now["defaults"][name]:
            continue  # a setting added since the run began, at its default: what the run did before it existed
        if not same_text(now["settings"].get(name, "<unset>"), old_settings.get(name, "<unset>")):
            out.append(f"{flag_name(name)}: {now['settings'].get(name)!r} here, {old_settings.get(name)!r} in the run")
    return out


def _input_change(name: str, now: dict[str, Any], then: dict[str, Any]) -> str:
    """One phrase for an input that is not what the run read: another split or another list, the items of a list
    that changed, or other content."""
    flag = flag_name(name)
    if (len(now.get("items", [now])) != len(then.get("items", [then])) or now.get("split") != then.get("split")
            or spec_options(now.get("given", "")) != spec_options(then.get("given", ""))):
        return f"{flag}: {now['given']!r} here, {then.get('given', then['path'])!r} in the run"
    if "items" in now or "items" in then:
        changed = changed_items(now, then)
        return (f"{flag}: {', '.join(changed)} {'is' if len(changed) == 1 else 'are'} not what the run read "
                f"(of {now['given']})")
    return f"{flag}: {now['path']} is not what the run read ({then['path']}, other content)"


def sidecar(out: Path, name: str, file: bool = False) -> Path:
    """Where a file written beside ``out`` goes: inside a folder output, or ``OUT.name`` beside a file output."""
    return out.with_name(f"{out.name}.{name}") if file else out / name


def _holds_results(out: Path, config_name: str, file: bool) -> bool:
    if file:
        return out.exists() and out.stat().st_size > 0
    if not out.is_dir():
        return False
    ours = {FINGERPRINT, config_name} if (out / FINGERPRINT).exists() else {FINGERPRINT}  # else whose config is it?
    return any(p.name not in ours for p in out.iterdir())


def claim_output(out: str | os.PathLike, config, *, command: str, overwrite: bool = False,
                 config_name: str = "config.json", file: bool = False, seeded: tuple[str, ...] = ()) -> list | None:
    """Make ``out`` this run's: refuse one that holds a run with another fingerprint, unless ``overwrite``
    (which removes it and starts over); then write the fingerprint and the resolved config beside it.

    An ``out`` that is, or is a folder holding, an input of the run is refused first, ``overwrite`` or not: the
    run would remove or write over what it reads. A rerun with the same fingerprint resumes; the two files are
    written only where they change. An output with results but no fingerprint (an older
    redline) is compared by the resolved config it holds, when it holds one; with neither, it is taken
    only when it holds nothing but ``seeded`` names (stages of this command placed there to start from,
    as scripts do with PIT's SFT), and refused otherwise, so no run writes into a folder of other files.
    ``file``: ``out`` is one file (``generate``), and the two are written beside it as
    ``OUT.fingerprint.json``, ``OUT.config.json``. Returns, for a folder claimed afresh, what it held
    (``release_output`` compares it, to release a run that wrote nothing into a seeded folder).
    """
    out = Path(out)
    now = fingerprint(config, command)
    _refuse_own_input(out, config, now, overwrite)
    stamp = sidecar(out, FINGERPRINT, file)
    config_path = sidecar(out, config_name, file)
    if not file and _removing(out).is_dir():  # what a removal cut short left
        shutil.rmtree(_removing(out), ignore_errors=True)
    found = None if file or stamp.exists() else _contents(out, config_name)
    if _holds_results(out, config_name, file) and not overwrite:
        torn = "torn, or not redline's; pass --overwrite to start over"
        recorded = read_json_object(config_path, "the run's settings", torn) if config_path.is_file() and not stamp.is_file() else None
        if stamp.is_file():
            before = read_json_object(stamp, "the run's fingerprint", torn)
        elif recorded and set(recorded) & set(now["settings"]):
            # An older run recorded no digests and perhaps fewer fields: compare the settings it did record.
            before = {**now, "settings": {k: recorded.get(k, v) for k, v in now["settings"].items()}}
        else:
            others = [] if file else sorted(p.name for p in out.iterdir() if p.name not in {*seeded, *NOT_CONTENT})
            older = not file and recorded is None and any((out / m).exists() for m in RUN_MARKERS)
            if file or (others and not older):  # a config.json not ours (a model's) is never written over
                holding = f"; it holds {', '.join(others[:3])}{', ...' if len(others) > 3 else ''}" if others else ""
                what = "pass --overwrite to replace it" if file else "--overwrite if it is a redline run to replace"
                raise RedlineError(f"{out} exists and has no {stamp.name} beside it (not written by this redline, or by "
                                   f"an older one{holding}): choose another --out, or {what}")
            before = now  # an older redline's run that recorded no config, or what a script placed to start from
        diff = differences(before, now)
        if diff:
            raise RedlineError(f"{out} holds a run with other settings or inputs: {'; '.join(diff)}. Rerun with the "
                               "run's settings to resume it, or pass --overwrite to start over")
    elif overwrite and (_holds_results(out, config_name, file) or stamp.exists()):
        _remove_run(out, stamp, config_path, file)
        print(f"redline: --overwrite: removed the earlier run in {out}", file=sys.stderr)
    (out.parent if file else out).mkdir(parents=True, exist_ok=True)
    _write_if_changed(stamp, json.dumps(now, indent=2, default=str) + "\n")  # a resume may change free settings
    write_config(config_path, config)
    return found


def _refuse_own_input(out: Path, config, now: dict[str, Any], overwrite: bool) -> None:
    """Refuse an ``out`` that is, or is a folder holding, one of the run's inputs, before anything is refused or
    removed: ``--overwrite`` would remove what the run is about to read (``generate --prompts p.jsonl --out
    p.jsonl``), and a run would write over it. A field marked ``read_first`` is read before OUT is claimed."""
    target = out.resolve()
    first = {f.name for f in fields(config) if f.metadata.get("read_first")}
    for name, record in now["inputs"].items():
        if name in first:
            continue
        for item in record.get("items", [record]):
            path = named_path(item["given"]) if "digest" in item else None
            read = path.resolve() if path is not None else None
            if read is None or (read != target and target not in read.parents):
                continue
            what = "is" if read == target else "holds"
            harm = "--overwrite would remove it before it is read" if overwrite else "the run would write over it"
            raise RedlineError(f"--out {out} {what} the run's input {flag_name(name)} {item['given']}: {harm}; "
                               "choose another --out")


def _contents(out: Path, config_name: str) -> list:
    """Every file under ``out`` but the two sidecars, with its size and time: what a run found, or has written."""
    if not out.is_dir():
        return []
    return sorted((str(p.relative_to(out)), p.stat().st_size, p.stat().st_mtime_ns) for p in out.rglob("*")
                  if p.is_file() and p.relative_to(out).parts[0] not in (FINGERPRINT, config_name))


def release_output(out: str | os.PathLike, *, config_name: str = "config.json", created: bool = False,
                   file: bool = False, found: list | None = None) -> None:
    """Undo ``claim_output`` for a run that failed before it wrote anything (a bad input, a wrong model
    kind): no fingerprint is left to refuse the corrected rerun, and no empty folder. ``found``: what a
    folder claimed afresh held (a seeded stage); unchanged, the run wrote nothing."""
    out = Path(out)
    unchanged = found is not None and _contents(out, config_name) == found
    if not unchanged and _holds_results(out, config_name, file):
        return
    for path in (sidecar(out, FINGERPRINT, file), sidecar(out, config_name, file)):
        path.unlink(missing_ok=True)
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def _remove_run(out: Path, stamp: Path, config_path: Path, file: bool) -> None:
    if file:
        for path in (out, stamp, config_path):
            path.unlink(missing_ok=True)
        return
    markers = (FINGERPRINT, config_path.name, *RUN_MARKERS)
    if not any((out / m).exists() for m in markers):
        raise RedlineError(f"{out} holds files that no redline run wrote: --overwrite removes only a redline run; "
                           "choose another --out")
    here, folder = Path.cwd().resolve(), out.resolve()
    if folder == here or folder in here.parents or folder == Path.home().resolve():
        raise RedlineError(f"--overwrite would remove {folder}, which holds the current folder or is home: "
                           "choose an --out of its own")
    aside = out
    if not out.is_symlink():  # OUT gone at once: a removal cut short (Ctrl-C) leaves it whole or gone
        try:
            aside = out.rename(_removing(out))
        except OSError:  # a mount point, or what a removal cut short left there: removed where it is
            pass
    shutil.rmtree(aside)


def _removing(out: Path) -> Path:
    """Where ``--overwrite`` moves a run folder to remove it, beside OUT. Removed in place, a removal cut short left
    OUT with part of its files and perhaps none of its markers, refused as not redline's, and so was --overwrite."""
    out = out.resolve()
    return out.with_name(f".{out.name}.removing")
