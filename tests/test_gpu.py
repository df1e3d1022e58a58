"""The trainers and the engine on CUDA, in bfloat16, on tiny-random: the tests marked ``gpu``.

Without CUDA every test here skips, unless ``REDLINE_GPU_TESTS_ON_CPU=1`` runs them on the CPU
(``scripts/gpu_check.py --cpu`` does, so that they are exercised where no GPU is at hand). A test
of a trainer that needs TRL and ``datasets`` skips, naming the package, where they are not installed
(a GPU machine with no network gets them as wheels: docs/gpu.md).

``scripts/gpu_check.py`` runs them with ``-m gpu`` and records each outcome in its JSON.
"""

import json
import math
import os

import pytest

torch = pytest.importorskip("torch")

from redline.cli import main  # noqa: E402
from redline.generation import SamplingParams, as_chat  # noqa: E402

pytestmark = pytest.mark.gpu

PROMPTS = [
    "Hello",
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the",
    "Once upon a time",
    as_chat("Write a haiku about autumn."),
]


@pytest.fixture(scope="module")
def device():
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("REDLINE_GPU_TESTS_ON_CPU") == "1":
        return "cpu"
    pytest.skip("needs CUDA (REDLINE_GPU_TESTS_ON_CPU=1 runs it on the CPU)")


def needs_trl():
    pytest.importorskip("trl", reason="TRL is not installed (docs/gpu.md: carry it as a wheel)")
    pytest.importorskip("datasets", reason="datasets is not installed (docs/gpu.md: carry it as a wheel)")


def losses(run, name="train_log.jsonl"):
    return [row["loss"] for row in map(json.loads, (run / name).read_text().splitlines()) if "loss" in row]


def adapter_trained(run) -> bool:
    from safetensors.torch import load_file

    adapter = load_file(str(run / "adapter_model.safetensors"))
    return any("lora_B" in k and v.float().abs().sum() > 0 for k, v in adapter.items())  # B starts at zero


# ----------------------------------------------------------------------------- the engine


def test_engine_in_bf16_generates_on_the_device(device):
    from redline.generation import load_engine

    engine = load_engine("tiny-random", dtype="bfloat16", device=device, max_batch=8)
    assert engine.device.type == device and engine.dtype == torch.bfloat16
    out = engine.generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=12, seed=1), progress=False)
    assert [len(c.token_ids) for c in out] == [c.completion_tokens for c in out]
    assert all(1 <= c.completion_tokens <= 12 and c.finish_reason in ("stop", "length") for c in out)
    assert engine.last_stats.completion_tokens == sum(c.completion_tokens for c in out)


def test_engine_greedy_equals_model_generate_in_float32(device):
    from redline.generation import load_engine

    engine = load_engine("tiny-random", device=device, max_batch=8)
    out = engine.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=12), progress=False)
    for prompt, completion in zip(PROMPTS, out):
        ids = torch.tensor([engine.encode(prompt)], device=engine.device)
        ref = engine.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
        new = ref[0, ids.shape[1] :].tolist()
        if new and new[-1] in engine.eos_ids:
            new = new[:-1]
        assert completion.token_ids[: len(new)] == new


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_engine_completion_is_the_same_alone_or_in_any_batch(device, dtype):
    """The engine's CPU promise (generation/transformers_engine.py). Not made on CUDA: cuBLAS chooses
    its kernels by a matmul's shape, so a row's bits depend on the batch (an H200 broke it in float32
    and bf16; docs/gpu.md). The next test checks what CUDA keeps."""
    from redline.generation import load_engine

    if device != "cpu":
        pytest.skip("bit-exact batch independence is promised on the CPU only (docs/gpu.md)")
    engine = load_engine("tiny-random", dtype=dtype, device=device, max_batch=8)
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=24)
    alone = [engine.generate([p], params, seeds=[40 + i], progress=False)[0].token_ids for i, p in enumerate(PROMPTS)]
    batched = engine.generate(PROMPTS, params, seeds=[40, 41, 42, 43], progress=False)
    assert [c.token_ids for c in batched] == alone
    others = ["Another prompt entirely", "x", "A third one, somewhat longer than the others are"]
    mixed = engine.generate(others + PROMPTS[::-1], params, seeds=[1, 2, 3, 43, 42, 41, 40], progress=False)
    assert [c.token_ids for c in mixed[3:]] == alone[::-1]


# A near-tie that rounding may flip: the top two logits closer than this (times the larger of 1 and the
# top logit's size). float32 rounding moves a logit by ~1e-6 here; bf16 keeps 8 bits of mantissa.
NEAR_TIE = {"float32": 1e-3, "bfloat16": 0.05}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_engine_repeats_a_call_exactly_and_batching_flips_only_near_ties(device, dtype):
    """What holds on every device: the same call gives the same tokens again (a resumed run that forms
    the same calls reproduces), and a greedy completion alone and in a batch part only where its top
    two logits were nearly tied, so a different batch changes rounding, never which row is read."""
    from redline.generation import load_engine

    engine = load_engine("tiny-random", dtype=dtype, device=device, max_batch=8)
    sampled = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=24)
    first = engine.generate(PROMPTS, sampled, seeds=[40, 41, 42, 43], progress=False)
    again = engine.generate(PROMPTS, sampled, seeds=[40, 41, 42, 43], progress=False)
    assert [c.token_ids for c in again] == [c.token_ids for c in first]

    greedy = SamplingParams(temperature=0, max_new_tokens=24)
    alone = [engine.generate([p], greedy, progress=False)[0].token_ids for p in PROMPTS]
    others = ["Another prompt entirely", "x", "A third one, somewhat longer than the others are"]
    mixed = engine.generate(others + PROMPTS[::-1], greedy, progress=False)[3:][::-1]
    batched = engine.generate(PROMPTS, greedy, progress=False)
    parted = 0
    for prompt, own in zip(PROMPTS, alone):
        for other in (batched[PROMPTS.index(prompt)].token_ids, mixed[PROMPTS.index(prompt)].token_ids):
            step = next((t for t, (a, b) in enumerate(zip(own, other)) if a != b), None)
            if step is None:
                assert len(own) == len(other)
                continue
            parted += 1
            ids = torch.tensor([engine.encode(prompt) + own[:step]], device=engine.device)
            with torch.no_grad():
                top = engine.model(ids).logits[0, -1].float().topk(2).values
            margin = float(top[0] - top[1])
            assert margin <= NEAR_TIE[dtype] * max(1.0, abs(float(top[0]))), (
                f"{prompt!r} parted from its batched twin at token {step} with the top two logits "
                f"{margin:.4g} apart: more than rounding")
    if device == "cpu" and dtype == "float32":
        assert parted == 0  # the CPU promise (the test above)


# ----------------------------------------------------------------------------- trainers


def test_sft_and_critic_train_in_bf16_on_the_device(device, jsonl, tmp_path):
    needs_trl()
    feedback = [{"prompt": f"Write a sentence about topic {i}, all in lowercase.", "response": f"The Topic {i}.",
                 "critique": "It uses capital letters.", "revision": f"the topic {i}."} for i in range(16)]
    demos = [{"prompt": f"Question {i}?", "response": f"good answer {i} " * 3} for i in range(16)]
    common = ["--model", "tiny-random", "--device", device, "--bf16", "--batch-size", "4", "--grad-accum", "1",
              "--learning-rate", "3e-3", "--logging-steps", "1", "--save-steps", "100", "--warmup", "0", "--max-steps", "8"]
    for command, data in (("sft", demos), ("critic", feedback)):
        run = tmp_path / command
        assert main(["train", command, "--data", str(jsonl(data, f"{command}.jsonl")), "--out", str(run), *common]) == 0
        curve = losses(run)
        assert all(math.isfinite(x) for x in curve) and curve[-1] < curve[0]
        assert adapter_trained(run)


def test_reward_and_gap_reward_train_in_bf16_on_the_device(device, jsonl, tmp_path):
    rankings = [{"prompt": f"Question {i}?", "responses": [f"good answer {i} " * 4, "meh", "no"], "ranks": [0, 1, 2]}
                for i in range(12)]
    prefs = [{"prompt": f"Question {i}?", "chosen": f"good answer {i} " * 4, "rejected": "no"} for i in range(12)]
    common = ["--model", "tiny-random", "--device", device, "--bf16", "--no-lora", "--batch-size", "4",
              "--learning-rate", "3e-3", "--logging-steps", "1", "--save-steps", "100", "--warmup", "0", "--max-steps", "8"]
    for command, data in (("reward", rankings), ("gap-reward", prefs)):
        run = tmp_path / command
        assert main(["train", command, "--data", str(jsonl(data, f"{command}.jsonl")), "--out", str(run), *common]) == 0
        curve = losses(run)
        assert all(math.isfinite(x) for x in curve) and curve[-1] < curve[0]


def _scored_run(path, kind):
    from redline.models import ModelCard, load_reward_model, load_tokenizer, save_model

    save_model(load_reward_model("tiny-random", device="cpu"), load_tokenizer("tiny-random"), path,
               ModelCard(kind=kind, base_model="tiny-random"))
    return str(path)


def test_ppo_iterations_in_bf16_on_the_device(device, jsonl, tmp_path):
    prompts = jsonl([{"prompt": f"Write about topic {i}."} for i in range(8)], "prompts.jsonl")
    run = tmp_path / "ppo"
    assert main(["train", "ppo", "--policy", "tiny-random", "--reward", _scored_run(tmp_path / "rm", "reward"),
                 "--prompts", str(prompts), "--out", str(run), "--device", device, "--dtype", "bfloat16",
                 "--iterations", "2", "--batch-size", "4", "--minibatch-size", "2", "--micro-batch-size", "2",
                 "--max-new-tokens", "8", "--lora-r", "4", "--learning-rate", "1e-3", "--value-warmup-iterations", "0"]) == 0
    rows = [json.loads(line) for line in (run / "ppo_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert rows[0]["kl"] == 0 and rows[1]["kl"] != 0  # LoRA starts as the identity, and the update moved it
    assert all(math.isfinite(r[k]) for r in rows for k in ("reward", "kl", "entropy", "policy_loss", "value_loss"))
    assert adapter_trained(run)


def test_pit_curriculum_in_bf16_on_the_device(device, jsonl, tmp_path):
    needs_trl()  # PIT SFT is an SFT run
    prefs = [{"prompt": f"Write about topic {i}.", "chosen": f"Topic {i} is good, and here is why.", "rejected": "no"}
             for i in range(4)]
    run = tmp_path / "pit"
    assert main(["train", "pit", "--policy", "tiny-random", "--gap-reward", _scored_run(tmp_path / "gap", "gap-reward"),
                 "--data", str(jsonl(prefs)), "--out", str(run), "--device", device, "--dtype", "bfloat16",
                 "--max-steps", "1", "--sft-batch-size", "2", "--iterations", "1", "--batch-size", "2",
                 "--minibatch-size", "2", "--max-new-tokens", "4", "--reference-max-new-tokens", "4", "--lora-r", "4",
                 "--value-warmup-iterations", "0"]) == 0
    manifest = json.loads((run / "pit.json").read_text())
    assert manifest["policy"] == "rl-0-1"
    for stage in ("rl-0", "rl-0-1"):
        row = json.loads((run / stage / "ppo_log.jsonl").read_text().splitlines()[0])
        assert math.isfinite(row["reward"]) and math.isfinite(row["policy_loss"])
