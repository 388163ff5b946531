"""Generation for evaluation: answers to each prompt set, written as JSONL keyed by prompt id.

Resumable: the output file is appended one answer at a time, so a killed run generates only the prompts
that are missing. The Hugging Face backend is here; the vLLM backend joins it behind the same function.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm


@dataclass
class GenerationConfig:
    backend: str = "hf"
    max_new_tokens: int = 512     # the paper's default
    temperature: float = 0.0      # 0 = greedy, as the paper
    batch_size: int = 16
    seed: int = 0


_STOP = re.compile(r"\n\s*\n|\bUSER\b|\bUser\b")


def postprocess(text: str) -> str:
    """Cut the answer at the first blank line or the first 'User' turn (the paper's protocol)."""
    return _STOP.split(text, maxsplit=1)[0].strip()


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break           # a line cut by a kill: everything after it is rewritten
    return rows


def generate(model_dir: Path, prompts: list[dict], template: str, cfg: GenerationConfig, out: Path,
             desc: str = "generate") -> list[dict]:
    done = {r["prompt_id"]: r for r in read_jsonl(out)}
    todo = [p for p in prompts if p["prompt_id"] not in done]
    if done:       # rewrite the good lines, dropping a torn last line a kill may have left
        out.write_text("".join(json.dumps(done[p["prompt_id"]]) + "\n" for p in prompts if p["prompt_id"] in done))
    if todo:
        _generate_hf(model_dir, todo, template, cfg, out, desc)
    rows = {r["prompt_id"]: r for r in read_jsonl(out)}
    return [rows[p["prompt_id"]] for p in prompts]


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
                raw = tok.decode(row, skip_special_tokens=True)
                f.write(json.dumps({"prompt_id": p["prompt_id"], "prompt": p["prompt"], "category": p.get("category", ""),
                                    "response": postprocess(raw)}) + "\n")
            f.flush()
            bar.update(len(batch))
