"""The GPU check: redline's ``gpu`` tests and its speed on one NVIDIA GPU, written as JSON into a folder.

    PYTHONPATH=src python3 scripts/gpu_check.py OUT [--wheels .whl]       # on the GPU machine, <= 8 minutes
    PYTHONPATH=src python scripts/gpu_check.py OUT --cpu --tiny           # the same code at tiny sizes on a CPU

For a machine with PyTorch, transformers, PEFT and accelerate but no network and redline not
installed (docs/gpu.md). Every part runs in a child process under its own timeout, inside one overall
budget, and OUT/results.json is rewritten after each part, so a part that crashes, hangs or finds a
package missing is recorded as such and the rest still run:

1. ``wheels``: packages the machine lacks (TRL, datasets and their needs) are installed from the
   wheels in ``--wheels`` (default: ``.whl`` beside ``src``, if there) into a temporary folder put on
   the children's path; a wheel of a package that is already installed is left alone.
2. ``env``: Python, torch, CUDA, the GPU, and the version of every library redline uses.
3. ``tests``: ``pytest -m gpu`` (tests/test_gpu.py: the trainers and the engine on CUDA in bf16 on
   tiny-random, the engine's batch independence), each test's outcome; OUT/gpu_tests.xml.
4. Speed on randomly initialised models built from a config in code (no weights fetched): the
   embedded model's shape (SmolLM2-135M) and a ~1B Llama (Llama-3.2-1B's shape with SmolLM2's
   49 152-token vocabulary), in bf16:
   - ``engine:SIZE``: the engine against ``model.generate``, greedy, batch 64, tokens/s and peak memory;
   - ``sft:SIZE``: LoRA SFT through ``train_sft`` (TRL), tokens/s and peak memory;
   - ``ppo:SIZE``: two PPO iterations through ``run_ppo``, each phase's seconds, peak memory.

``--cpu --tiny`` runs every part on the CPU with tiny-random's shape and a few tokens (the default
test suite does, so the script cannot rot); ``--tests-on-cpu`` also runs the gpu tests there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "safetensors", "tokenizers", "gguf", "numpy",
             "pyarrow", "fsspec", "dill", "multiprocess", "huggingface-hub", "pytest")
SIZES = ("smollm2-135m", "llama-1b")
# Seconds each part may take at most (the overall budget cuts them further).
CAPS = {"env": 60, "tests": 200, "engine": 75, "sft": 75, "ppo": 90}
# Llama-3.2-1B's shape; the vocabulary stays SmolLM2's, so the shipped tokenizer's ids fit.
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, head_dim=64, max_position_embeddings=8192)
TINY = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, max_position_embeddings=2048)
WORDS = ("the model reads a prompt and writes an answer about rivers cities music science history food travel "
         "weather sport light water stone paper code data and every word counts once more").split()


# ----------------------------------------------------------------------------- the parent: parts under timeouts


def _dist_name(wheel: Path) -> str:
    return re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def finite(value):
    """``value`` with NaN and infinities as None, so the JSON written is JSON (a diverged loss is NaN)."""
    if isinstance(value, float):
        return value if value - value == 0 else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(finite(value), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def install_wheels(folder: Path | None, site: Path) -> dict:
    """Install the wheels in ``folder`` whose package is missing here into ``site`` (no index, no deps)."""
    if folder is None or not folder.is_dir():
        return {"status": "skipped", "reason": f"no wheels folder ({folder})" if folder else "no wheels folder given"}
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        return {"status": "skipped", "folder": str(folder), "reason": f"no wheels in {folder}"}
    present = {w.name: _installed(_dist_name(w)) for w in wheels}
    todo = [w for w in wheels if present[w.name] is None]
    result = {"folder": str(folder), "already_installed": {k: v for k, v in present.items() if v}, "installed": [w.name for w in todo]}
    if not todo:
        return {**result, "status": "ok"}
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--disable-pip-version-check", "--target", str(site), *map(str, todo)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        return {**result, "status": "failed", "reason": done.stderr.strip()[-2000:]}
    return {**result, "status": "ok"}


def run_child(cmd: list[str], env: dict, timeout: float, log) -> tuple[int | None, float]:
    """Run ``cmd`` in its own process group; kill the whole group at ``timeout``. (returncode or None, seconds)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return proc.wait(timeout=max(1.0, timeout)), time.monotonic() - start
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None, time.monotonic() - start


def junit_outcomes(path: Path) -> dict:
    """Each test's outcome (and message) from pytest's JUnit XML."""
    tests = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name")
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or "")[:500]
                break
        tests[name] = {"outcome": outcome, "seconds": round(float(case.get("time") or 0), 2),
                       **({"message": message} if message else {})}
    counts = {k: sum(t["outcome"] == k for t in tests.values()) for k in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "tests": tests}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for results.json, gpu_tests.xml and log.txt")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (no CUDA needed)")
    ap.add_argument("--tiny", action="store_true", help="tiny-random's shape and a few tokens instead of the real sizes")
    ap.add_argument("--wheels", type=Path, default=None, help="folder of wheels to install where missing (default: .whl, if there)")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for everything (default: %(default)s)")
    ap.add_argument("--parts", default="env,tests,engine,sft,ppo", help="comma-separated: env,tests,engine,sft,ppo")
    ap.add_argument("--sizes", default=None, help=f"comma-separated model sizes (default: {','.join(SIZES)}; --tiny: tiny)")
    ap.add_argument("--tests-on-cpu", action="store_true", help="with --cpu: run the gpu tests on the CPU rather than skip them")
    ap.add_argument("-k", dest="keyword", default=None, help="pytest -k expression for the tests part")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--size", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.part:
        return child(args)

    deadline = time.monotonic() + args.budget
    out = args.out.resolve()
    # everything checkable here is checked before any part runs: on the GPU machine a mistake costs its budget
    parts = list(dict.fromkeys(p.strip() for p in args.parts.split(",") if p.strip()))  # once each, in order
    unknown = set(parts) - set(CAPS)
    if unknown:
        ap.error(f"unknown parts: {', '.join(sorted(unknown))}")
    if not parts:
        ap.error(f"--parts {args.parts!r}: no part to run (choose from {', '.join(CAPS)})")
    sizes = list(dict.fromkeys(x.strip() for x in args.sizes.split(",") if x.strip())) if args.sizes else []
    sizes = sizes or (["tiny"] if args.tiny else list(SIZES))
    if set(sizes) - {*SIZES, "tiny"}:  # else every speed part would start, build nothing and fail
        ap.error(f"unknown sizes: {', '.join(sorted(set(sizes) - {*SIZES, 'tiny'}))} (choose from {', '.join(SIZES)}, tiny)")
    if args.budget < 15:  # a part starts only with 15 s left: every one would be skipped, and the check exit 0
        ap.error(f"--budget {args.budget:g}: below the 15 s a part needs to start")
    if args.wheels is not None and not args.wheels.is_dir():  # else TRL's parts skip as not installed, exit 0
        ap.error(f"--wheels {args.wheels}: not a folder (leave --wheels out to use .whl/ beside src/ if it is there)")
    if out.exists() and not out.is_dir():
        ap.error(f"OUT {args.out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     "command": " ".join(sys.argv), "device": "cpu" if args.cpu else "cuda", "tiny": args.tiny,
                     "budget_s": args.budget, "parts": {}}

    def save():
        write_json(out / "results.json", results)

    # Part 1: wheels, into a folder only the children see; their temporary files (each part's models, 0.5-4 GB at
    # the real sizes) go in it too, so that it all goes when the check ends, a part killed at its timeout included.
    site = Path(tempfile.mkdtemp(prefix="redline-gpu-site-"))
    try:
        return run_parts(args, parts, sizes, out, deadline, results, save, site)
    finally:
        shutil.rmtree(site, ignore_errors=True)


def run_parts(args, parts: list[str], sizes: list[str], out: Path, deadline: float, results: dict, save, site: Path) -> int:
    """Install the wheels into ``site``, then run each part in a child process under its timeout; the exit status."""
    wheels = args.wheels if args.wheels is not None else (ROOT / ".whl" if (ROOT / ".whl").is_dir() else None)
    results["parts"]["wheels"] = install_wheels(wheels, site)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "REDLINE_CACHE": str(site / "cache"), "MPLBACKEND": "Agg", "TMPDIR": str(site / "tmp")}
    (site / "tmp").mkdir()
    if args.cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    if args.tests_on_cpu:
        env["REDLINE_GPU_TESTS_ON_CPU"] = "1"
    save()

    jobs = []
    for part in parts:
        if part in ("env", "tests"):
            jobs.append((part, None))
        else:
            jobs.extend((part, size) for size in sizes)
    # The smaller models first: the 1B ones are what the budget cuts when time runs short.
    jobs.sort(key=lambda j: (["env", "tests"].index(j[0]) if j[0] in ("env", "tests") else 2,
                             sizes.index(j[1]) if j[1] in sizes else 0))

    with open(out / "log.txt", "a") as log:
        for part, size in jobs:
            key = f"{part}:{size}" if size else part
            left = deadline - time.monotonic()
            if left < 15:
                results["parts"][key] = {"status": "skipped", "reason": f"out of time ({args.budget:.0f} s budget)"}
                save()
                continue
            timeout = min(CAPS[part], left - 5)
            log.write(f"\n===== {key} (timeout {timeout:.0f} s) {dt.datetime.now().isoformat(timespec='seconds')}\n")
            log.flush()
            result_file = site / f"{key.replace(':', '-')}.json"
            if part == "tests":
                xml = out / "gpu_tests.xml"
                cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                       f"--junitxml={xml}", "tests/test_gpu.py"] + (["-k", args.keyword] if args.keyword else [])
            else:
                cmd = [sys.executable, __file__, str(out), "--part", part, "--result", str(result_file)]
                cmd += (["--size", size] if size else []) + (["--cpu"] if args.cpu else []) + (["--tiny"] if args.tiny else [])
            code, seconds = run_child(cmd, env, timeout, log)
            entry: dict = {"wall_s": round(seconds, 1)}
            if code is None:
                entry.update(status="timeout", reason=f"killed after {timeout:.0f} s")
            if part == "tests":
                if (out / "gpu_tests.xml").exists() and code is not None:
                    entry.update(junit_outcomes(out / "gpu_tests.xml"))
                    entry.setdefault("status", "ok" if code == 0 else "failed")
                else:
                    entry.setdefault("status", "failed")
                    entry.setdefault("reason", f"pytest exited {code} without a report (log.txt)")
            elif result_file.exists():
                entry.update(json.loads(result_file.read_text()))
            else:
                entry.setdefault("status", "failed")
                entry.setdefault("reason", f"exited {code} with no result (log.txt)")
            results["parts"][key] = entry
            save()
    results["seconds"] = round(args.budget - (deadline - time.monotonic()), 1)
    save()
    bad = [k for k, v in results["parts"].items() if v.get("status") not in ("ok", "skipped")]
    print(json.dumps({k: v.get("status") for k, v in results["parts"].items()}))
    print(f"gpu_check: {out / 'results.json'} ({results['seconds']} s){'; not ok: ' + ', '.join(bad) if bad else ''}")
    return 1 if bad else 0


# ----------------------------------------------------------------------------- the children: one part each


def child(args) -> int:
    """Run one part and write its JSON to ``args.result``; a missing package is a skip with its reason."""
    result: dict
    try:
        result = {"env": part_env, "engine": part_engine, "sft": part_sft, "ppo": part_ppo}[args.part](args)
        result.setdefault("status", "ok")
    except ModuleNotFoundError as e:
        result = {"status": "skipped", "reason": f"{e.name} is not installed (docs/gpu.md: carry it as a wheel)"}
    write_json(args.result, result)
    print(json.dumps(finite(result)), flush=True)
    return 0


def part_env(args) -> dict:
    import platform

    import torch

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "libraries": {name: _installed(name) for name in LIBRARIES}, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 2**30, 1), multiprocessors=p.multi_processor_count,
                    capability=f"{p.major}.{p.minor}", cuda=torch.version.cuda, bf16=torch.cuda.is_bf16_supported())
    return info


class Bench:
    """Shared by the speed parts: the device, a model of a size with random weights, the tokenizer, timers."""

    def __init__(self, args):
        import torch

        from redline.models import embedded_files

        self.torch = torch
        self.cuda = not args.cpu
        if self.cuda and not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available (use --cpu)")
        self.device = "cuda" if self.cuda else "cpu"
        self.size = args.size
        self.tiny = args.tiny
        self.work = Path(tempfile.mkdtemp(prefix=f"redline-gpu-{args.part}-"))
        self.files = embedded_files(self.work / "embedded")
        torch.manual_seed(0)

    def config(self):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.files)
        config.update({"tiny": TINY, "smollm2-135m": {}, "llama-1b": LLAMA_1B}[self.size])
        return config

    def tokenizer(self):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.files)
        tok.pad_token = tok.pad_token or tok.eos_token
        return tok

    def model(self, dtype):
        from transformers import AutoModelForCausalLM

        with self.torch.device(self.device):
            model = AutoModelForCausalLM.from_config(self.config(), dtype=getattr(self.torch, dtype))
        return model.eval()

    def saved_model(self, dtype="bfloat16") -> str:
        """A model folder of this size (random weights) that redline's loaders take by path."""
        folder = self.work / f"model-{self.size}"
        if not folder.exists():
            self.model(dtype).save_pretrained(folder)
            self.tokenizer().save_pretrained(folder)
        return str(folder)

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self):
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gb(self) -> float | None:
        return round(self.torch.cuda.max_memory_allocated() / 2**30, 2) if self.cuda else None

    def texts(self, n: int, words: int, seed: int = 0) -> list[str]:
        import random

        rng = random.Random(seed)
        return [f"({i}) " + " ".join(rng.choice(WORDS) for _ in range(words)) for i in range(n)]

    def describe(self, model) -> dict:
        c = model.config
        return {"size": self.size, "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
                "layers": c.num_hidden_layers, "hidden": c.hidden_size, "vocab": c.vocab_size}


def part_engine(args) -> dict:
    """The engine against ``model.generate`` on the same prompts, greedy, every row generating max_new tokens."""
    from redline.generation import SamplingParams
    from redline.generation.transformers_engine import TransformersEngine

    b = Bench(args)
    torch = b.torch
    batch, prompt_words, max_new = (4, 8, 8) if b.tiny else (64, 96, 128)
    model, tok = b.model("bfloat16"), b.tokenizer()
    texts = b.texts(batch, prompt_words)
    result = {**b.describe(model), "dtype": "bfloat16", "batch": batch, "max_new_tokens": max_new}

    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True).to(b.device)
    result["prompt_tokens"] = int(enc["attention_mask"].sum())

    def hf_generate(rows):
        with torch.inference_mode():
            return model.generate(input_ids=enc["input_ids"][:rows], attention_mask=enc["attention_mask"][:rows], do_sample=False,
                                  max_new_tokens=max_new, min_new_tokens=max_new, pad_token_id=tok.pad_token_id)

    hf_generate(2)  # warm-up: CUDA context, kernels
    b.sync()
    b.reset_peak()
    t0 = time.perf_counter()
    out = hf_generate(batch)
    b.sync()
    seconds = time.perf_counter() - t0
    tokens = (out.shape[1] - enc["input_ids"].shape[1]) * batch
    result["generate"] = {"seconds": round(seconds, 3), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
                          "peak_gb": b.peak_gb()}

    params = SamplingParams(temperature=0, max_new_tokens=max_new)
    for name, exact in (("engine", True), ("engine_not_exact", False)):
        engine = TransformersEngine(model, tok, max_batch=batch, ignore_eos=True, exact=exact, kv_budget_gb=16)
        engine.generate(texts[:2], params, progress=False)  # warm-up
        b.sync()
        b.reset_peak()
        t0 = time.perf_counter()
        engine.generate(texts, params, progress=False)
        b.sync()
        seconds = time.perf_counter() - t0
        s = engine.last_stats
        result[name] = {"seconds": round(seconds, 3), "tokens": s.completion_tokens,
                        "tokens_per_s": round(s.completion_tokens / seconds, 1), "prefill_s": round(s.prefill_seconds, 3),
                        "peak_gb": b.peak_gb()}
    result["engine_vs_generate"] = round(result["engine"]["tokens_per_s"] / result["generate"]["tokens_per_s"], 2)
    return result


def part_sft(args) -> dict:
    """LoRA SFT through ``train_sft`` (TRL's SFTTrainer), bf16 autocast, completion-only loss."""
    from redline.train.sft import SFTSettings, train_sft

    b = Bench(args)
    steps, batch, words = (2, 2, 12) if b.tiny else (12, 8, 160)
    model = b.saved_model()
    prompts, answers = b.texts(steps * batch, words // 4, seed=1), b.texts(steps * batch, words, seed=2)
    examples = [{"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": a}]}
                for p, a in zip(prompts, answers)]
    settings = SFTSettings(model=model, device=b.device, bf16=True, batch_size=batch, grad_accum=1, max_steps=steps,
                           max_length=512, warmup=0, logging_steps=1, save_steps=10_000, learning_rate=2e-4)
    b.reset_peak()
    m = train_sft(examples, settings, b.work / "sft", kind="sft", data=["synthetic"])
    return {"size": b.size, "lora": True, "bf16_autocast": True, "batch": batch, "steps": m["steps"], "tokens": m["tokens"],
            "train_seconds": m["train_seconds"], "tokens_per_s": round(m["tokens"] / m["train_seconds"], 1) if m["tokens"] else None,
            "first_loss": m["first_loss"], "final_loss": m["final_loss"], "peak_gb": b.peak_gb()}


def part_ppo(args) -> dict:
    """Two PPO iterations (LoRA policy and value, shared reference, bf16 weights) through ``run_ppo``."""
    from redline.models import ModelCard, load_reward_model, load_tokenizer, save_model
    from redline.train.ppo import PPOConfig, instructgpt_reward, load_ppo_models, run_ppo
    from redline.train.sft import as_chat

    b = Bench(args)
    episodes, minibatch, micro, max_new = (4, 2, 2, 8) if b.tiny else (64, 16, 16, 128)
    policy_dir = b.saved_model()
    reward_dir = b.work / "reward"
    save_model(load_reward_model(policy_dir, dtype="bfloat16", device="cpu"), load_tokenizer(policy_dir), reward_dir,
               ModelCard(kind="reward", base_model=policy_dir))
    records = [{"prompt": t} for t in b.texts(episodes * 2, 40, seed=3)]
    config = PPOConfig(policy=policy_dir, reward=str(reward_dir), prompts="-", device=b.device, dtype="bfloat16",
                       iterations=2, batch_size=episodes, minibatch_size=minibatch, micro_batch_size=micro,
                       max_new_tokens=max_new, save_every=100, warmup_iterations=1,
                       value_warmup_iterations=0)  # both iterations train the policy: their phases are comparable
    b.reset_peak()
    models = load_ppo_models(config, b.device)
    scorer, adapter_off = models.scorer()
    reward = instructgpt_reward(scorer, models.scorer_tokenizer, adapter_off=adapter_off)
    run_ppo(config, models, records, reward, lambda r: as_chat(r["prompt"]), b.work / "ppo")
    rows = [json.loads(line) for line in (b.work / "ppo" / "ppo_log.jsonl").read_text().splitlines()]
    phases = ("generate_s", "score_s", "evaluate_s", "train_s")
    return {"size": b.size, "dtype": "bfloat16", "episodes": episodes, "minibatch": minibatch, "micro_batch": micro,
            "max_new_tokens": max_new, "iterations": [{k: r[k] for k in ("iteration", "response_length", *phases)} for r in rows],
            "peak_gb": b.peak_gb()}


if __name__ == "__main__":
    sys.exit(main())
