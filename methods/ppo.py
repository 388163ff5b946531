"""PPO-Lagrangian as Safe RLHF implements it, and RePO on the same machinery (REFERENCE §5-§6).

Six models: the actor (from SFT), the frozen reference, the frozen reward and cost models, and a reward and a
cost critic initialised from them. Each step samples answers to a batch of training prompts (Hugging Face
`generate`, temperature 1), scores them, splits the per-token KL between the two critics' rewards, runs GAE
for each, moves the multiplier and then takes one clipped PPO step for the actor and each critic.

RePO's rule as implemented here (its exact multiplier update is not public): the constraint is per prompt,
C(x, y) <= 0, so the penalty is the rectified cost max(C, 0): the cost critic learns it, a safe answer
(C <= 0) carries no penalty at all, and however safe one answer is it cannot pay for an unsafe answer to
another prompt, as it can under Safe RLHF's expected-cost constraint. The multiplier takes Safe RLHF's
log-lambda step on the mean rectified cost of the last episodes with threshold 0; a rectified cost is never
negative, so lambda grows while any sampled answer is unsafe and holds once all are safe (lambda_max caps
it). In the clipped objective safe and unsafe samples form two batches of equal weight, so the few unsafe
samples of a mostly safe batch still steer the update.
"""
from __future__ import annotations

import json
import math
import os
import random
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from safealign.methods.rl_math import (clipped_surrogate, clipped_value_loss, combined_advantage, gae,
                                       lagrange_update, rectified, token_rewards)
from safealign.stages import write_jsonl


@dataclass
class PPOConfig:
    algorithm: str = "saferlhf"   # "saferlhf" (PPO-Lagrangian) | "repo" (rectified per-prompt constraint)
    steps: int = 100              # rollout batches
    rollout_batch: int = 16
    max_new_tokens: int = 512
    temperature: float = 1.0
    actor_lr: float = 1e-5
    critic_lr: float = 5e-6
    kl_coeff: float = 0.01
    clip: float = 0.2
    value_clip: float = 5.0
    score_clip: float = 50.0
    gamma: float = 1.0
    gae_lambda: float = 0.95
    lambda_init: float = 1.0
    lambda_lr: float = 0.1
    lambda_max: float = 5.0
    threshold: float = 0.0
    lambda_delay: int = 0         # steps before the multiplier starts to move
    episode_window: int = 128     # J_c is the mean cost of the last this-many episodes
    ptx_coeff: float = 0.0        # Safe RLHF's optional LM loss on SFT data (16.0 in its scripts)
    reward_model_epochs: int = 2
    cost_model_epochs: int = 2
    score_model_lr: float = 2e-5
    save_every: int = 20          # steps between checkpoints that a killed run resumes from (0: none)


class Models:
    def __init__(self, sft: Path, reward: Path, cost: Path, cfg: PPOConfig):
        from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification,
                                  AutoModelForTokenClassification, AutoTokenizer)
        self.tok = AutoTokenizer.from_pretrained(sft)
        self.tok.padding_side = "left"
        self.actor = AutoModelForCausalLM.from_pretrained(sft)
        self.ref = AutoModelForCausalLM.from_pretrained(sft).eval()
        self.rm = AutoModelForSequenceClassification.from_pretrained(reward, num_labels=1).eval()
        self.cm = AutoModelForSequenceClassification.from_pretrained(cost, num_labels=1).eval()
        self.vr = AutoModelForTokenClassification.from_pretrained(reward, num_labels=1)
        self.vc = AutoModelForTokenClassification.from_pretrained(cost, num_labels=1)
        for m in (self.ref, self.rm, self.cm):
            m.requires_grad_(False)
        for m in (self.rm, self.cm, self.vr, self.vc):
            m.config.pad_token_id = self.tok.pad_token_id
        self.opt_actor = torch.optim.AdamW(self.actor.parameters(), lr=cfg.actor_lr)
        self.opt_critics = torch.optim.AdamW(list(self.vr.parameters()) + list(self.vc.parameters()), lr=cfg.critic_lr)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_actor, T_max=max(cfg.steps, 1))


def token_logps(model, seq, attn, pos, start: int) -> torch.Tensor:
    logits = model(input_ids=seq, attention_mask=attn, position_ids=pos).logits[:, start - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, seq[:, start:, None])[..., 0]


def rollout(m: Models, prompts: list[str], cfg: PPOConfig) -> dict:
    """Sample answers and compute everything the update needs, with no gradients."""
    enc = m.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    start = enc["input_ids"].shape[1]
    with torch.no_grad():
        m.actor.eval()
        seq = m.actor.generate(**enc, do_sample=True, temperature=cfg.temperature, top_k=0, top_p=1.0,
                               max_new_tokens=cfg.max_new_tokens, pad_token_id=m.tok.pad_token_id)
        resp = seq[:, start:]
        ended = (resp == m.tok.eos_token_id).long()
        mask = ((ended.cumsum(-1) - ended) == 0).float()          # tokens up to and including the first eos
        resp_ids = torch.where(mask.bool(), resp, torch.full_like(resp, m.tok.pad_token_id))
        seq = torch.cat([enc["input_ids"], resp_ids], 1)
        attn = torch.cat([enc["attention_mask"], mask.long()], 1)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        old_logp = token_logps(m.actor, seq, attn, pos, start)
        ref_logp = token_logps(m.ref, seq, attn, pos, start)
        r = m.rm(input_ids=seq, attention_mask=attn, position_ids=pos).logits[:, 0].float()
        c = m.cm(input_ids=seq, attention_mask=attn, position_ids=pos).logits[:, 0].float()
        v_r = m.vr(input_ids=seq, attention_mask=attn, position_ids=pos).logits[:, start - 1:-1, 0].float()
        v_c = m.vc(input_ids=seq, attention_mask=attn, position_ids=pos).logits[:, start - 1:-1, 0].float()
    return {"seq": seq, "attn": attn, "pos": pos, "start": start, "mask": mask, "old_logp": old_logp,
            "ref_logp": ref_logp, "reward": r, "cost": c, "v_r": v_r, "v_c": v_c}


def ppo_step(m: Models, b: dict, lam: float, cfg: PPOConfig, ptx: dict | None) -> dict:
    """One clipped PPO update of the actor and both critics on a rollout batch."""
    mask, kl = b["mask"], (b["old_logp"] - b["ref_logp"]) * b["mask"]
    cost_end = rectified(b["cost"]) if cfg.algorithm == "repo" else b["cost"]
    rew = token_rewards(kl, b["reward"], mask, cfg.kl_coeff, -1.0, cfg.score_clip)
    cst = token_rewards(kl, cost_end, mask, cfg.kl_coeff, +1.0, cfg.score_clip)
    adv_r, ret_r = gae(rew, b["v_r"], mask, cfg.gamma, cfg.gae_lambda)
    adv_c, ret_c = gae(cst, b["v_c"], mask, cfg.gamma, cfg.gae_lambda)
    adv = combined_advantage(adv_r, adv_c, lam)
    m.actor.train()
    logp = token_logps(m.actor, b["seq"], b["attn"], b["pos"], b["start"])
    if cfg.algorithm == "repo":     # safe and unsafe samples form two batches of equal weight in the loss
        safe = (b["cost"] <= 0).float()[:, None]
        groups = [g for g in (mask * safe, mask * (1 - safe)) if g.sum() > 0]
        actor_loss = sum(clipped_surrogate(logp, b["old_logp"], adv, g, cfg.clip) for g in groups) / len(groups)
    else:
        actor_loss = clipped_surrogate(logp, b["old_logp"], adv, mask, cfg.clip)
    if ptx is not None and cfg.ptx_coeff > 0:
        actor_loss = actor_loss + cfg.ptx_coeff * m.actor(**ptx).loss
    m.opt_actor.zero_grad()
    actor_loss.backward()
    torch.nn.utils.clip_grad_norm_(m.actor.parameters(), 1.0)
    m.opt_actor.step()
    m.sched.step()
    kw = {"input_ids": b["seq"], "attention_mask": b["attn"], "position_ids": b["pos"]}
    s = b["start"]
    v_r = m.vr(**kw).logits[:, s - 1:-1, 0].float()
    v_c = m.vc(**kw).logits[:, s - 1:-1, 0].float()
    critic_loss = clipped_value_loss(v_r, b["v_r"], ret_r, mask, cfg.value_clip) + \
        clipped_value_loss(v_c, b["v_c"], ret_c, mask, cfg.value_clip)
    m.opt_critics.zero_grad()
    critic_loss.backward()
    m.opt_critics.step()
    return {"actor_loss": actor_loss.item(), "critic_loss": critic_loss.item(),
            "kl": float((kl.sum(-1)).mean()), "length": float(mask.sum(-1).mean())}


def _ptx_batch(m: Models, rows: list[dict], template: str, rng: random.Random, n: int) -> dict:
    picks = [rows[rng.randrange(len(rows))] for _ in range(n)]
    texts = [template.format(input=r["prompt"]) + " " + r[f"response_{r['better_response_id']}"] + m.tok.eos_token
             for r in picks]
    m.tok.padding_side = "right"
    enc = m.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    m.tok.padding_side = "left"
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return {**enc, "labels": labels}


def save_checkpoint(path: Path, m: Models, step: int, log_lambda: float, window: deque, curves: list,
                    rng: random.Random) -> None:
    """Everything the loop needs to continue exactly where it stopped, in one file replaced atomically."""
    state = {"step": step, "log_lambda": log_lambda, "window": list(window), "curves": curves,
             "py_rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
             "actor": m.actor.state_dict(), "vr": m.vr.state_dict(), "vc": m.vc.state_dict(),
             "opt_actor": m.opt_actor.state_dict(), "opt_critics": m.opt_critics.state_dict(),
             "sched": m.sched.state_dict()}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, m: Models, rng: random.Random) -> dict:
    state = torch.load(path, weights_only=False)
    for name in ("actor", "vr", "vc", "opt_actor", "opt_critics", "sched"):
        getattr(m, name).load_state_dict(state[name])
    rng.setstate(state["py_rng"])
    torch.set_rng_state(state["torch_rng"])
    return state


def train_ppo(cfg: PPOConfig, sft: Path, reward: Path, cost: Path, rows: list[dict], template: str, work: Path,
              seed: int) -> None:
    from tqdm import tqdm
    torch.manual_seed(seed)
    rng = random.Random(seed)
    m = Models(sft, reward, cost, cfg)
    log_lambda, window, curves, first = math.log(cfg.lambda_init), deque(maxlen=cfg.episode_window), [], 0
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "checkpoint.pt"
    if ckpt.exists():          # a killed run: continue from its last checkpoint
        state = load_checkpoint(ckpt, m, rng)
        log_lambda, curves, first = state["log_lambda"], state["curves"], state["step"]
        window.extend(state["window"])
    prompts = [template.format(input=r["prompt"]) for r in rows]
    with tqdm(total=cfg.steps, initial=first, desc=cfg.algorithm, unit="step") as bar:
        for step in range(first, cfg.steps):
            batch = rollout(m, [prompts[rng.randrange(len(prompts))] for _ in range(cfg.rollout_batch)], cfg)
            costs = rectified(batch["cost"]) if cfg.algorithm == "repo" else batch["cost"]
            window.extend(costs.tolist())
            if step >= cfg.lambda_delay:    # Safe RLHF moves lambda before the actor step
                threshold = 0.0 if cfg.algorithm == "repo" else cfg.threshold
                log_lambda = lagrange_update(log_lambda, sum(window) / len(window), threshold, cfg.lambda_lr,
                                             cfg.lambda_max)
            lam = math.exp(log_lambda)
            ptx = _ptx_batch(m, rows, template, rng, cfg.rollout_batch) if cfg.ptx_coeff > 0 else None
            stats = ppo_step(m, batch, lam, cfg, ptx)
            curves.append({"step": step, "reward": float(batch["reward"].mean()), "cost": float(batch["cost"].mean()),
                           "unsafe_share": float((batch["cost"] > 0).float().mean()), "lambda": lam, **stats})
            bar.set_postfix(reward=f"{curves[-1]['reward']:.2f}", cost=f"{curves[-1]['cost']:.2f}", lam=f"{lam:.2f}")
            bar.update()
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
                save_checkpoint(ckpt, m, step + 1, log_lambda, window, curves, rng)
    m.actor.save_pretrained(work / "model")
    m.tok.padding_side = "right"
    m.tok.save_pretrained(work / "model")
    write_jsonl(work / "curves.jsonl", curves)
    (work / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    plot_curves(curves, work / "curves.png", cfg.algorithm)
    ckpt.unlink(missing_ok=True)


def plot_curves(curves: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = ["reward", "cost", "kl", "lambda"]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3))
    steps = [c["step"] for c in curves]
    for ax, key in zip(axes, keys):
        ax.plot(steps, [c[key] for c in curves])
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title} training curves")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def rl_method(run, name: str, params: dict) -> list:
    """`saferlhf` / `repo`: reward model, cost model (stages shared by both), then PPO from the SFT model."""
    from safealign.methods.score_model import ScoreModelConfig, train_score_model
    from safealign.methods.training import from_dict
    cfg = from_dict(PPOConfig, run.method_settings(name, params), f"methods.{name}")
    max_len = int(run.config.get("train", {}).get("max_length", 512))
    scores = {}
    for kind, epochs in (("reward", cfg.reward_model_epochs), ("cost", cfg.cost_model_epochs)):
        sm = ScoreModelConfig(kind=kind, epochs=epochs, learning_rate=cfg.score_model_lr, max_length=max_len)
        scores[kind] = run.store.run(
            "score-model", {"score": asdict(sm), "seed": run.seed, "limit": run.limit, "template": run.template},
            {"sft": run.reference, "data": run.data_stage},
            lambda w, sm=sm: train_score_model(sm, run.reference.model, run.rows("train"), run.rows("test"),
                                               run.template, w, run.seed),
            label=f"{kind} model")
        run.log(f"{kind} model held-out: {json.loads((scores[kind] / 'metrics.json').read_text())}")
    stage = run.store.run("rl", {"ppo": asdict(cfg), "seed": run.seed, "limit": run.limit, "template": run.template},
                          {"sft": run.reference, "reward": scores["reward"], "cost": scores["cost"],
                           "data": run.data_stage},
                          lambda w: train_ppo(cfg, run.reference.model, scores["reward"].model, scores["cost"].model,
                                              run.rows("train"), run.template, w, run.seed), label=name)
    return [(name, stage)]
