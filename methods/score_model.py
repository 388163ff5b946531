"""Safe RLHF's score models: a scalar head on the last non-pad token of the SFT model (HF's
*ForSequenceClassification pools exactly there). The reward model learns from better/worse pairs, the cost
model from safer/unsafer pairs plus the sign terms that put unsafe answers above 0 and safe ones below."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from safealign.methods.rl_math import cost_model_loss, reward_model_loss


@dataclass
class ScoreModelConfig:
    kind: str = "reward"        # "reward" | "cost"
    epochs: int = 2
    learning_rate: float = 2e-5
    batch_size: int = 16
    max_length: int = 512


def _pairs(rows: list[dict], kind: str, template: str) -> list[tuple]:
    """(prompt, winner, loser, winner_safe, loser_safe): winner = better (reward) or safer (cost) response."""
    col = "better_response_id" if kind == "reward" else "safer_response_id"
    out = []
    for r in rows:
        w = r[col]
        out.append((template.format(input=r["prompt"]), " " + r[f"response_{w}"], " " + r[f"response_{1 - w}"],
                    bool(r[f"is_response_{w}_safe"]), bool(r[f"is_response_{1 - w}_safe"])))
    return out


def score(model, tok, prompts: list[str], responses: list[str], max_length: int) -> torch.Tensor:
    # the answer ends with EOS, as a PPO rollout does, so the score sits on the same token in both
    texts = [p + r + tok.eos_token for p, r in zip(prompts, responses)]
    enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length,
              add_special_tokens=False).to(model.device)
    return model(**enc).logits[:, 0].float()


def _loss(model, tok, batch: list[tuple], kind: str, max_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    prompts = [b[0] for b in batch]
    sw, sl = score(model, tok, prompts, [b[1] for b in batch], max_length), \
        score(model, tok, prompts, [b[2] for b in batch], max_length)
    if kind == "reward":
        return reward_model_loss(sw, sl), sw, sl
    w_safe = torch.tensor([b[3] for b in batch], device=sw.device)
    l_safe = torch.tensor([b[4] for b in batch], device=sw.device)
    # for cost the winner is the safer answer; the loss wants the unsafer one (the loser) to cost more
    return cost_model_loss(sw, sl, w_safe, l_safe), sw, sl


def train_score_model(cfg: ScoreModelConfig, base: Path, train: list[dict], test: list[dict], template: str,
                      work: Path, seed: int) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from tqdm import tqdm
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(base)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    pairs = _pairs(train, cfg.kind, template)
    rng = random.Random(seed)
    model.train()
    steps = cfg.epochs * ((len(pairs) + cfg.batch_size - 1) // cfg.batch_size)
    with tqdm(total=steps, desc=f"{cfg.kind} model", unit="step") as bar:
        for _ in range(cfg.epochs):
            rng.shuffle(pairs)
            for i in range(0, len(pairs), cfg.batch_size):
                loss, _, _ = _loss(model, tok, pairs[i:i + cfg.batch_size], cfg.kind, cfg.max_length)
                opt.zero_grad()
                loss.backward()
                opt.step()
                bar.set_postfix(loss=f"{loss.item():.3f}")
                bar.update()
    model.eval()
    metrics = evaluate(model, tok, test, cfg, template)
    model.save_pretrained(work / "model")
    tok.save_pretrained(work / "model")
    (work / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def evaluate(model, tok, rows: list[dict], cfg: ScoreModelConfig, template: str) -> dict:
    """Held-out accuracy (the labelled winner scores higher; for cost: the unsafer answer costs more) and, for
    the cost model, sign accuracy (cost > 0 exactly for unsafe answers)."""
    pairs = _pairs(rows, cfg.kind, template)
    right, signs, n = 0, 0, 0
    with torch.no_grad():
        for i in range(0, len(pairs), 64):
            batch = pairs[i:i + 64]
            _, sw, sl = _loss(model, tok, batch, cfg.kind, cfg.max_length)
            right += int((sw > sl).sum()) if cfg.kind == "reward" else int((sl > sw).sum())
            for s, b in zip(sw.tolist(), batch):
                signs += (s > 0) == (not b[3])
            for s, b in zip(sl.tolist(), batch):
                signs += (s > 0) == (not b[4])
            n += len(batch)
    out = {"accuracy": right / max(n, 1), "pairs": n}
    if cfg.kind == "cost":
        out["sign_accuracy"] = signs / max(2 * n, 1)
    return out
