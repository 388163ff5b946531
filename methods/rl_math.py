"""The pure math of Safe RLHF's PPO-Lagrangian and of RePO (REFERENCE §5-§6), in small torch functions.

Each rule carries a one-line note of the behaviour of the Safe RLHF code (PKU-Alignment/safe-rlhf) it follows.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sequence_means(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each sequence's mean over its own tokens (sum / its length; 0 for a row with no token)."""
    return (x * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sequence's own tokens (sum / its length), then mean over the sequences; rows with no
    token at all are left out. (Safe RLHF's `masked_mean`: per-sequence means averaged over the batch.)"""
    per_seq = sequence_means(x, mask)
    keep = mask.sum(-1) > 0
    return per_seq[keep].mean() if keep.any() else per_seq.sum() * 0.0


def score_regularization(a: torch.Tensor, b: torch.Tensor, coeff: float) -> torch.Tensor:
    """coeff * mean of the squared scores of both answers. (Safe RLHF's score models add
    `regularization * stack([lower, higher]).square().mean()`, 0.001 in its scripts.)"""
    return coeff * torch.stack([a, b]).square().mean()


def reward_model_loss(r_better: torch.Tensor, r_worse: torch.Tensor, regularization: float = 0.0) -> torch.Tensor:
    """Safe RLHF reward model: -log sigmoid(r_better - r_worse), mean over pairs (Bradley-Terry), plus the
    score regularisation."""
    return -F.logsigmoid(r_better - r_worse).mean() + score_regularization(r_better, r_worse, regularization)


def cost_model_loss(c_safer: torch.Tensor, c_unsafer: torch.Tensor, safer_is_safe: torch.Tensor,
                    unsafer_is_safe: torch.Tensor, regularization: float = 0.0) -> torch.Tensor:
    """Safe RLHF cost model: -log sig(c_unsafer - c_safer) - log sig(s_safer c_safer) - log sig(s_unsafer c_unsafer),
    with s = +1 for an unsafe response and -1 for a safe one, so unsafe answers are pushed to cost > 0 and
    safe ones to cost < 0; mean over pairs, plus the score regularisation."""
    s_safer = 1.0 - 2.0 * safer_is_safe.float()
    s_unsafer = 1.0 - 2.0 * unsafer_is_safe.float()
    loss = (-F.logsigmoid(c_unsafer - c_safer) - F.logsigmoid(s_safer * c_safer)
            - F.logsigmoid(s_unsafer * c_unsafer)).mean()
    return loss + score_regularization(c_safer, c_unsafer, regularization)


def token_rewards(kl: torch.Tensor, score: torch.Tensor, mask: torch.Tensor, kl_coeff: float, sign: float,
                  clip: float = 50.0) -> torch.Tensor:
    """Per-token rewards of one critic: sign * kl_coeff * kl at every token (reward: -beta kl, cost: +beta kl),
    plus the sequence score at the last response token; each token's total is clipped to +-clip.
    (Safe RLHF adds the end score onto the KL penalty by scatter_add, then clamps every token to +-50.)"""
    out = sign * kl_coeff * kl * mask
    last = mask.long().cumsum(-1).argmax(-1)        # index of each row's last response token
    out[torch.arange(len(out), device=out.device), last] += score
    return out.clamp(-clip, clip) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens (B, T); V = 0 after the last token.
    delta_t = r_t + gamma V_{t+1} - V_t; A_t = delta_t + gamma lam A_{t+1}; returns = A + V.
    (Safe RLHF: gamma 1.0, lambda 0.95, values and rewards masked, run separately for each critic.)"""
    values = values * mask
    adv = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    T = rewards.shape[1]
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        adv[:, t] = running
    return adv, adv + values


def combined_advantage(adv_r: torch.Tensor, adv_c: torch.Tensor, lam: float) -> torch.Tensor:
    """Safe RLHF actor advantage: (A_r - lambda A_c) / (1 + lambda)."""
    return (adv_r - lam * adv_c) / (1.0 + lam)


def surrogate_tokens(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip: float = 0.2) -> torch.Tensor:
    """PPO's per-token actor loss -min(rho A, clip(rho, 1 - eps, 1 + eps) A), rho = exp(logp - old_logp)."""
    ratio = torch.exp(logp - old_logp)
    return -torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                      clip: float = 0.2) -> torch.Tensor:
    """PPO actor loss: the clipped surrogate averaged per sequence then over the batch.
    (Safe RLHF's actor_loss_fn: -masked_mean of the clipped surrogate.)"""
    return masked_mean(surrogate_tokens(logp, old_logp, adv, clip), mask)


def grouped_loss(per_seq: torch.Tensor, group: torch.Tensor, counts: torch.Tensor, world: int = 1) -> torch.Tensor:
    """A batch loss in which every non-empty group of rows weighs the same and rows weigh the same within their
    group: sum_i per_seq_i / (G * counts[group_i]), G the number of non-empty groups. `counts` are the rows of each
    group in the whole batch, all processes together; the result is scaled by `world` because data-parallel
    training averages the processes' gradients. One group on one process: the batch mean (masked_mean); RePO's
    safe and unsafe halves: two groups."""
    weights = 1.0 / ((counts > 0).sum() * counts[group].clamp(min=1))
    return world * (per_seq * weights).sum()


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       clip: float = 5.0) -> torch.Tensor:
    """Critic loss: 0.5 max((V - R)^2, (clip(V, V_old +- eps) - R)^2), averaged per sequence then over the
    batch. (Safe RLHF's critic_loss_fn: 0.5 * masked_mean of the larger squared error, clip 5.0.)"""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    loss = 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return masked_mean(loss, mask)


def lagrange_update(log_lambda: float, mean_cost: float, threshold: float = 0.0, lr: float = 0.1,
                    lambda_max: float | None = 5.0) -> float:
    """Safe RLHF's multiplier step on log lambda: log lambda += lr * lambda * (J_c - threshold), then
    lambda <= lambda_max. It rises while the mean episode cost is above the threshold and falls below it.
    (Safe RLHF: SGD on -(J_c - threshold) * exp(log_lambda), then log_lambda clamped to log(lambda_max).)"""
    lam = math.exp(log_lambda)
    log_lambda = log_lambda + lr * lam * (mean_cost - threshold)
    if lambda_max is not None:
        log_lambda = min(log_lambda, math.log(lambda_max))
    return log_lambda


def rectified(cost: torch.Tensor) -> torch.Tensor:
    """RePO's per-sample penalty {C(x, y)}^+ = max(C, 0): a safe sample (C <= 0) is not penalised at all."""
    return cost.clamp(min=0.0)


def violations(cost: torch.Tensor) -> torch.Tensor:
    """1.0 for each sample that breaks RePO's per-prompt constraint C(x, y) <= 0, else 0.0."""
    return (cost > 0).float()


def answer_mask(resp: torch.Tensor, eos_ids: list[int], budgets: torch.Tensor) -> torch.Tensor:
    """1.0 on each sampled answer's own tokens: up to and including its first token that is ANY of `eos_ids`
    (Llama 3 ends a turn with <|eot_id|> as well as <|end_of_text|>), and only the first budgets[i] tokens of
    row i (the tokens its prompt leaves under the cap on prompt + answer; an answer cut there has no EOS, as
    in Safe RLHF, whose generate stops at max_length)."""
    ended = torch.isin(resp, torch.tensor(eos_ids, device=resp.device)).long()
    before_end = (ended.cumsum(-1) - ended) == 0
    within = torch.arange(resp.shape[1], device=resp.device)[None, :] < budgets.to(resp.device)[:, None]
    return (before_end & within).float()


def answer_budgets(prompt_lengths: list[int], max_length: int, max_new_tokens: int) -> list[int]:
    """Each row's answer cap: prompt + answer <= max_length tokens (Safe RLHF: GenerationConfig(max_length=512),
    safe-rlhf:safe_rlhf/trainers/rl_trainer.py), and never more than max_new_tokens."""
    return [max(0, min(max_new_tokens, max_length - n)) for n in prompt_lengths]


def shuffled_pass(n: int, batch: int, step: int, seed: int) -> list[int]:
    """The indices of `step`'s batch when n items are taken in one freshly shuffled pass per epoch, `batch`
    at a time; the last batch of a pass is filled from the start of the same pass, so every batch is full.
    A pure function of the step, so a resumed run continues the same pass. (Safe RLHF: a DistributedSampler
    with shuffle=True, which pads the last batch from the start of the permutation, one pass per epoch.)"""
    per_epoch = -(-n // batch)
    epoch, k = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    picks = order[k * batch:(k + 1) * batch]
    return picks + order[:batch - len(picks)]
