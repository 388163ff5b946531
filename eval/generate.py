"""Generation for evaluation: answers to each prompt set, written as JSONL keyed by prompt id.

Two backends behind one function: vLLM (`vllm.LLM` with explicit SamplingParams) and Hugging Face
`generate`. `backend = "auto"` takes vLLM when it is importable. Resumable: answers are appended to the
output file as they are made, so a killed run generates only the prompts that are missing.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from safealign.stages import read_jsonl, write_jsonl


@dataclass
class GenerationConfig:
    backend: str = "auto"         # "auto" (vLLM when importable) | "vllm" | "hf"
    max_new_tokens: int = 512     # the paper's default
    temperature: float = 0.0      # 0 = greedy, as the paper
    batch_size: int = 16
    seed: int = 0
    max_model_len: int | None = None   # vLLM's context length; None takes the model's


_STOP = re.compile(r"\n\s*\n|\bUSER\b|\bUser\b")


def postprocess(text: str) -> str:
    """Cut the answer at the first blank line or the first 'User' turn (the paper's protocol)."""
    return _STOP.split(text, maxsplit=1)[0].strip()


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


def _write(f, prompt: dict, text: str) -> None:
    f.write(json.dumps({"prompt_id": prompt["prompt_id"], "prompt": prompt["prompt"],
                        "category": prompt.get("category", ""), "response": postprocess(text)}) + "\n")


_ENGINE: dict = {}


def _engine(model_dir: Path, cfg: GenerationConfig):
    """One vLLM engine per model, kept for the next prompt set of the same model (an engine start costs
    seconds on a GPU and tens of seconds on a CPU); the previous model's engine is dropped first."""
    import gc

    from vllm import LLM
    key = (str(model_dir), cfg.seed, cfg.max_model_len)
    if _ENGINE.get("key") != key:
        _ENGINE.clear()
        gc.collect()
        _ENGINE["llm"] = LLM(model=str(model_dir), seed=cfg.seed, dtype="auto", max_model_len=cfg.max_model_len,
                             enforce_eager=True)
        _ENGINE["key"] = key
    return _ENGINE["llm"]


def _generate_vllm(model_dir: Path, todo: list[dict], template: str, cfg: GenerationConfig, out: Path,
                   desc: str) -> None:
    """vLLM's engine; prompts go in chunks so that a kill loses at most one chunk. On CPU, vLLM wants the
    caller's script under `if __name__ == "__main__":` (it spawns workers) and a small KV cache."""
    import os

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import SamplingParams
    llm = _engine(model_dir, cfg)
    params = SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed)
    chunk = max(cfg.batch_size, 256)
    with open(out, "a") as f, tqdm(total=len(todo), desc=desc, unit="prompt") as bar:
        for i in range(0, len(todo), chunk):
            batch = todo[i:i + chunk]
            results = llm.generate([template.format(input=p["prompt"]) for p in batch], params, use_tqdm=False)
            for p, r in zip(batch, results):
                _write(f, p, r.outputs[0].text)
            f.flush()
            bar.update(len(batch))


def _generate_hf(model_dir: Path, todo: list[dict], template: str, cfg: GenerationConfig, out: Path,
                 desc: str) -> None:
    import torch

    from safealign.models import load_policy
    model, tok = load_policy(model_dir)
    tok.padding_side = "left"
    torch.manual_seed(cfg.seed)
    sample = cfg.temperature > 0
    with open(out, "a") as f, tqdm(total=len(todo), desc=desc, unit="prompt") as bar:
        for i in range(0, len(todo), cfg.batch_size):
            batch = todo[i:i + cfg.batch_size]
            texts = [template.format(input=p["prompt"]) for p in batch]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                ids = model.generate(**enc, max_new_tokens=cfg.max_new_tokens, do_sample=sample,
                                     temperature=cfg.temperature if sample else None, top_p=None, top_k=None,
                                     pad_token_id=tok.pad_token_id)
            for p, row in zip(batch, ids[:, enc["input_ids"].shape[1]:]):
                _write(f, p, tok.decode(row, skip_special_tokens=True))
            f.flush()
            bar.update(len(batch))
