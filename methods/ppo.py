"""PPO-Lagrangian as the Safe RLHF code does it, and RePO on the same machinery (REFERENCE §5-§6).

Six models (methods/ppo_models.py): the actor (from SFT), the frozen reference, the frozen reward and cost models,
and a reward and a cost critic initialised from them. Prompts are taken in one freshly shuffled pass per epoch,
`rollout_batch` per step (Safe RLHF: 16 per device on 8 devices, 128 a step). Each step samples answers
(temperature 1; Hugging Face `generate` with a seed per answer, or vLLM: methods/rollouts.py), scores them,
splits the per-token KL between the two critics' rewards, runs GAE for each, moves the multiplier and then
takes one clipped PPO step for the actor and each critic. Losses are averaged per sequence, then over the batch.
The actor uses AdamW (betas 0.9/0.95, weight decay 0.01), warmup 0.03 then cosine; the critics AdamW (betas
0.9/0.95, no weight decay) at a constant rate; gradients are clipped to norm 1.0. Prompts, answers and the
optional PTX texts are tokenised by safealign.tokens, so the actor trains on the ids that TRL-trained models and
vLLM see, and the score models score what they learnt on.

Under `accelerate launch` each of N processes samples and scores its 1/N of the step's prompts; the actor and
critics are DDP models whose gradients are averaged, or under the FSDP config all six models are sharded. The
multiplier reads the episodes of every process (gathered, as Safe RLHF reduces the episode cost across ranks
before its lambda step), so every rank holds the same lambda. Answers are sampled per row from seeded
generators (methods/rollouts.py), so N processes train on the answers one process would sample.

Rollouts as Safe RLHF's: the training prompts are de-duplicated (one row per prompt text, as its
PromptOnlyDataset keeps, safe-rlhf:safe_rlhf/datasets/prompt_only.py), and prompt plus answer are capped
together at `max_length` tokens (its GenerationConfig(max_length=512), safe-rlhf:safe_rlhf/trainers/
rl_trainer.py): each row's answer keeps at most max_length - its prompt's tokens (and max_new_tokens), the
tokens sampled past that are masked out and the answer counts as cut, with no EOS. The reference truncates a
longer prompt to max_length, which cuts off the template's "ASSISTANT:" and leaves no room for an answer; here
such prompts are dropped, and their number logged (our choice). An answer ends at the first of ANY of the
actor's EOS ids (the tokenizer's and generation_config's, e.g. Llama 3's two), and generation stops there.

PTX (`ptx_coeff` > 0) trains on its own instruction data, `ptx_source`, as Safe RLHF's `--ptx_datasets alpaca`
(safe-rlhf:scripts/ppo-lag.sh) through its SupervisedDataset (prompt tokens masked): an Alpaca-format file, a
hub id at `ptx_revision` or a URL with `ptx_sha256`; or "safe-answers", the preference data's answers that are
both the better one and labelled safe. Unsafe answers never enter PTX.

RePO (Peng et al., arXiv 2410.19933) on the same machinery. Its constraint is per prompt, C(x, y) <= 0 for
every answer (here C(x, y) <= `threshold`, 0 as published), penalised through the rectified cost
{C(x, y)}^+ = max(C, 0) in its min-max objective: the cost critic learns the rectified cost, a safe answer
carries no penalty at all, and however safe one answer is it cannot pay for an unsafe answer to another
prompt, as it can under Safe RLHF's expected-cost constraint. Its multiplier (`repo_multiplier`):
"rectified" (default) is dual ascent on that objective, Safe RLHF's log-lambda step on the window's mean
rectified cost with bound 0: log lambda += lambda_lr * lambda * mean{C}^+. As {C}^+ >= 0, lambda never falls:
it rises while any answer in the window violates, up to lambda_max, and holds once none does. The paper's code
could not be read here, so the step size, initial value and cap are Safe RLHF's (a scalar lambda, not one
per prompt): our reading. "share" is this suite's earlier rule, not the paper's: the share of violating
answers in the window against `violation_target`, so lambda falls again below that share. In the clipped
objective safe and unsafe samples form two batches of equal weight (the paper's safe/unsafe batching), so
the few unsafe samples of a mostly safe batch still steer the update.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from safealign import BenchError
from safealign.methods.ppo_models import Models, load_checkpoint, save_checkpoint, token_logps  # noqa: F401
from safealign.methods.rl_math import (answer_budgets, answer_mask, clipped_value_loss, combined_advantage, gae,
                                       grouped_loss, lagrange_update, rectified, sequence_means, shuffled_pass,
                                       surrogate_tokens, token_rewards, violations)
from safealign.methods.rollouts import BACKENDS, VLLMRollouts, hf_answers, row_seeds
from safealign.stages import write_jsonl

REPO_MULTIPLIERS = ("rectified", "share")
SAFE_ANSWERS = "safe-answers"      # ptx_source: the preference data's safe, better answers


@dataclass
class PPOConfig:
    algorithm: str = "saferlhf"   # "saferlhf" (PPO-Lagrangian) | "repo" (rectified per-prompt constraint)
    epochs: int = 1               # shuffled passes over the training prompts (Safe RLHF: 1)
    steps: int = 0                # actor steps; 0: epochs x ceil(prompts / rollout_batch)
    rollout_batch: int = 128      # prompts per actor, critic and lambda step (Safe RLHF: 16 per device x 8)
    max_new_tokens: int = 512
    temperature: float = 1.0
    actor_lr: float = 1e-5
    actor_weight_decay: float = 0.01
    actor_warmup_ratio: float = 0.03
    critic_lr: float = 5e-6
    critic_weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    kl_coeff: float = 0.01
    clip: float = 0.2
    value_clip: float = 5.0
    score_clip: float = 50.0
    gamma: float = 1.0
    gae_lambda: float = 0.95
    lambda_init: float = 1.0
    lambda_lr: float = 0.1
    lambda_max: float = 5.0
    threshold: float = 0.0        # saferlhf: the mean episode cost allowed; repo: each answer's cost allowed
    repo_multiplier: str = "rectified"   # repo: "rectified" (the paper's dual step on mean {C}^+) | "share" (ours)
    violation_target: float = 0.05   # repo_multiplier = "share": the share of answers with cost > threshold allowed
    lambda_delay: int = 0         # steps before the multiplier starts to move
    # the multiplier reads the last this-many episodes of all processes together (Safe RLHF: 128 per rank, each
    # rank averaged, then averaged over the ranks: 128 x 8 ranks = the last 1024 episodes, 8 steps)
    episode_window: int = 128
    ptx_coeff: float = 0.0        # Safe RLHF's optional LM loss on instruction data (16.0 in its scripts)
    ptx_source: str = ""          # PTX data: Alpaca-format file, hub id, URL, or "safe-answers" (module docstring)
    ptx_revision: str = ""        # a hub ptx_source's commit ("" = latest)
    ptx_sha256: str = ""          # a URL ptx_source's pinned hash
    max_length: int = 512         # prompt + answer tokens in a rollout (Safe RLHF: 512); PTX texts are cut to it
    reward_model_epochs: int = 2
    cost_model_epochs: int = 2
    score_model_lr: float = 2e-5
    score_model_batch: int = 16
    score_model_micro_batch: int = 0   # pairs per forward in the score models' training (0: the whole batch)
    save_every: int = 20          # steps between checkpoints that a killed run resumes from (0: none)
    rollouts: str = "hf"          # "hf" (generate in the training process) | "vllm" (an engine beside it)
    vllm_memory: float = 0.3      # rollouts = "vllm" on a GPU: the share of its memory the engine may take
    bf16: bool = False            # bf16 autocast, float32 master weights (default: the benchmark's [train] bf16)
    # > 0: the score models, the actor and both critics train LoRA adapters (critics and score models their heads
    # too), and each frozen model is its trained twin with the adapters off: the reference is the actor's base,
    # the reward and cost models the critics' bases (a critic starts as its score model). Three bases, not six.
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_modules: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


def total_steps(cfg: PPOConfig, n_prompts: int) -> int:
    return cfg.steps or cfg.epochs * -(-n_prompts // cfg.rollout_batch)


def rollout(m: Models, prompts: list[str], seeds: list[int], cfg: PPOConfig, engine=None) -> dict:
    """Sample answers (one seed each; from `engine` when rollouts come from vLLM) and compute everything the
    update needs, with no gradients."""
    from safealign.tokens import left_padded, prompt_ids
    # the prompt ids as TRL and vLLM tokenise a prompt (the tokenizer's own BOS included); left-padded for HF
    plain = [prompt_ids(m.tok, p) for p in prompts]
    budgets = answer_budgets([len(p) for p in plain], cfg.max_length, cfg.max_new_tokens)
    ids, prompt_mask = (t.to(m.acc.device) for t in left_padded(plain, m.tok.pad_token_id))
    start = ids.shape[1]
    actor = m.core(m.actor)
    eos = stop_ids(m)
    with torch.no_grad():
        actor.eval()
        # sampled to the largest row budget (each row from its own seed, so its tokens do not depend on the
        # others'); a row's tokens past its own budget are masked out below
        if engine is None:
            resp = hf_answers(actor, ids, prompt_mask, seeds, max(budgets), cfg.temperature, m.tok.pad_token_id,
                              synced=m.sharded)
        else:
            resp = engine.answers(plain, max(budgets), cfg.temperature, m.tok.pad_token_id, m.acc.device)
        mask = answer_mask(resp, eos, torch.tensor(budgets))
        resp_ids = torch.where(mask.bool(), resp, torch.full_like(resp, m.tok.pad_token_id))
        seq = torch.cat([ids, resp_ids], 1)
        attn = torch.cat([prompt_mask, mask.long()], 1)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        old_logp = token_logps(actor, seq, attn, pos, start)
        ref_logp = m.reference_logps(seq, attn, pos, start)
        r = m.scores("reward", seq, attn, pos)      # the same scoring function as the score models' training
        c = m.scores("cost", seq, attn, pos)
        v_r = m.core(m.vr)(input_ids=seq, attention_mask=attn, position_ids=pos).logits[:, start - 1:-1, 0].float()
        v_c = m.core(m.vc)(input_ids=seq, attention_mask=attn, position_ids=pos).logits[:, start - 1:-1, 0].float()
    return {"seq": seq, "attn": attn, "pos": pos, "start": start, "mask": mask, "old_logp": old_logp,
            "ref_logp": ref_logp, "reward": r, "cost": c, "v_r": v_r, "v_c": v_c}


def stop_ids(m: Models) -> list[int]:
    """Every id that ends an answer: the tokenizer's EOS and each of the actor's generation_config EOS ids (an int
    or a list: Llama 3 stops at <|end_of_text|> and <|eot_id|>). Written back into the actor's generation config,
    so that `generate` (and vLLM, which reads the saved config) stops at any of them."""
    gen = m.core(m.actor).generation_config
    found = gen.eos_token_id if isinstance(gen.eos_token_id, (list, tuple)) else [gen.eos_token_id]
    ids = sorted({int(i) for i in [m.tok.eos_token_id, *found] if i is not None})
    gen.eos_token_id = ids
    return ids


def actor_loss(m: Models, b: dict, adv: torch.Tensor, cfg: PPOConfig) -> torch.Tensor:
    """This process's share of the clipped surrogate: per-sequence means, each row weighted as in the whole
    step's batch (RePO: safe and unsafe samples form two batches of equal weight, counted over all processes)."""
    m.actor.train()
    logp = token_logps(m.actor, b["seq"], b["attn"], b["pos"], b["start"])
    mask = b["mask"]
    per_seq = sequence_means(surrogate_tokens(logp, b["old_logp"], adv, cfg.clip), mask)
    group = (b["cost"] > cfg.threshold).long() if cfg.algorithm == "repo" else \
        torch.zeros_like(b["cost"], dtype=torch.long)
    counts = m.acc.reduce(torch.bincount(group, minlength=2), "sum")
    return grouped_loss(per_seq, group, counts, m.acc.num_processes)


def actor_backward(m: Models, loss: torch.Tensor, cfg: PPOConfig, ptx: dict | None) -> tuple[float, float]:
    """Backward of the actor's step; returns (the logged loss, the PTX loss). Safe RLHF with PTX: the RL and the PTX
    backward are two accumulation micro-steps of one optimiser step, averaged, so the step follows
    (RL loss + ptx_coeff * LM loss) / 2; under DDP the first keeps its gradients local (no_sync)."""
    if ptx is None:
        m.acc.backward(loss)
        return loss.item(), 0.0
    with m.acc.no_sync(m.actor):
        m.acc.backward(loss / 2)
    ptx_loss = m.actor(**ptx).loss
    m.acc.backward(cfg.ptx_coeff * ptx_loss / 2)
    return (loss.item() + cfg.ptx_coeff * ptx_loss.item()) / 2, ptx_loss.item()


def ppo_step(m: Models, b: dict, lam: float, cfg: PPOConfig, ptx: dict | None) -> dict:
    """One clipped PPO update of the actor and both critics on a rollout batch (this process's share of it);
    the figures it returns are averaged over the processes."""
    mask, kl = b["mask"], (b["old_logp"] - b["ref_logp"]) * b["mask"]
    cost_end = rectified(b["cost"] - cfg.threshold) if cfg.algorithm == "repo" else b["cost"]
    rew = token_rewards(kl, b["reward"], mask, cfg.kl_coeff, -1.0, cfg.score_clip)
    cst = token_rewards(kl, cost_end, mask, cfg.kl_coeff, +1.0, cfg.score_clip)
    adv_r, ret_r = gae(rew, b["v_r"], mask, cfg.gamma, cfg.gae_lambda)
    adv_c, ret_c = gae(cst, b["v_c"], mask, cfg.gamma, cfg.gae_lambda)
    m.opt_actor.zero_grad()
    loss, ptx_loss = actor_backward(m, actor_loss(m, b, combined_advantage(adv_r, adv_c, lam), cfg), cfg, ptx)
    m.clip(m.actor, cfg.max_grad_norm)   # Safe RLHF: gradient_clipping 1.0
    m.opt_actor.step()
    m.sched.step()
    kw = {"input_ids": b["seq"], "attention_mask": b["attn"], "position_ids": b["pos"]}
    s = b["start"]
    v_r = m.vr(**kw).logits[:, s - 1:-1, 0].float()
    v_c = m.vc(**kw).logits[:, s - 1:-1, 0].float()
    critic_loss = clipped_value_loss(v_r, b["v_r"], ret_r, mask, cfg.value_clip) + \
        clipped_value_loss(v_c, b["v_c"], ret_c, mask, cfg.value_clip)
    m.opt_critics.zero_grad()
    m.acc.backward(critic_loss)
    for critic in (m.vr, m.vc):     # each critic is its own DeepSpeed engine there, clipped on its own
        m.clip(critic, cfg.max_grad_norm)
    m.opt_critics.step()
    local = torch.tensor([loss, critic_loss.item(), ptx_loss, float(kl.sum(-1).mean()), float(mask.sum(-1).mean())],
                         device=m.acc.device)
    figures = m.acc.reduce(local, "mean").tolist()    # equal shares, so the mean of the means is the batch's
    return dict(zip(("actor_loss", "critic_loss", "ptx_loss", "kl", "length"), figures))


def ptx_batch(tok, examples: list[dict], max_length: int) -> dict:
    """An LM batch of SFT examples ({prompt, completion}) with labels -100 on the prompt and on padding.
    (Safe RLHF's PTX uses its supervised dataset, whose labels ignore the prompt tokens.)"""
    from safealign.tokens import prompt_answer_ids, right_padded
    ids, labels = [], []
    for ex in examples:
        p, a = prompt_answer_ids(tok, ex["prompt"], ex["completion"])
        ids.append((p + a)[:max_length])
        labels.append(([-100] * len(p) + a)[:max_length])
    input_ids, attention_mask = right_padded(ids, tok.pad_token_id)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": right_padded(labels, -100)[0]}


def shard(items: list, m: Models) -> tuple[list, int]:
    """(this process's contiguous share of a step's batch, the position of its first item in the batch)."""
    n = len(items) // m.acc.num_processes
    first = m.acc.process_index * n
    return items[first:first + n], first


def multiplier_signal(cfg: PPOConfig, cost: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(what each episode puts in the multiplier's window, the value the window's mean is held to). Safe RLHF:
    the episode cost against `threshold`. RePO "rectified": {C - threshold}^+ against 0, the dual gradient of
    its min-max objective; "share": 1 for an answer with C > threshold, against `violation_target`."""
    if cfg.algorithm != "repo":
        return cost, cfg.threshold
    if cfg.repo_multiplier == "share":
        return violations(cost - cfg.threshold), cfg.violation_target
    return rectified(cost - cfg.threshold), 0.0


def multiplier_step(cfg: PPOConfig, log_lambda: float, window: deque, cost: torch.Tensor,
                    step: int) -> tuple[float, float]:
    """Add the step's episodes (all processes') to the window and take the log-lambda step on the window's mean
    (Safe RLHF: before the actor step). The window spans steps when `episode_window` is longer than a step's
    batch. Returns (log lambda, the window figure it read)."""
    values, target = multiplier_signal(cfg, cost)
    window.extend(values.tolist())
    figure = sum(window) / len(window)
    if step >= cfg.lambda_delay:
        log_lambda = lagrange_update(log_lambda, figure, target, cfg.lambda_lr, cfg.lambda_max)
    return log_lambda, figure


def training_prompts(rows: list[dict], template: str, tok, max_length: int) -> tuple[list[str], int]:
    """The PPO prompts: each distinct prompt once, in first-seen order (Safe RLHF's PromptOnlyDataset keeps one
    row per prompt), without those whose ids leave no room for an answer under max_length (module docstring).
    Returns (prompts, how many were dropped as too long)."""
    from safealign.tokens import prompt_ids
    unique = list(dict.fromkeys(template.format(input=r["prompt"]) for r in rows))
    kept = [p for p in unique if len(prompt_ids(tok, p)) < max_length]
    return kept, len(unique) - len(kept)


def safe_answer_examples(rows: list[dict], template: str) -> list[dict]:
    """ptx_source = "safe-answers": per preference row its better answer, if that answer is labelled safe."""
    out = []
    for r in rows:
        best = r["better_response_id"]
        if r[f"is_response_{best}_safe"]:
            out.append({"prompt": template.format(input=r["prompt"]), "completion": " " + r[f"response_{best}"]})
    return out


def ptx_examples(cfg: PPOConfig, rows: list[dict], template: str, downloads: Path, log=print) -> list[dict]:
    """PTX's {prompt, completion} examples from `ptx_source`. An Alpaca row's prompt is its instruction, then a
    space and its input when it has one (safe-rlhf:safe_rlhf/datasets/raw/alpaca.py joins them so), in the run's
    prompt template; its completion is " " + output, the suite's answer convention (as sft_rows)."""
    from safealign.data import load_instructions
    from safealign.sources import resolve, sha256_of
    if cfg.ptx_source == SAFE_ANSWERS:
        examples = safe_answer_examples(rows, template)
    else:
        src = resolve(cfg.ptx_source, cfg.ptx_sha256 or None, downloads, log)
        if cfg.ptx_sha256 and Path(src).is_file() and sha256_of(Path(src)) != cfg.ptx_sha256.lower():
            raise BenchError(f"ptx_source {src} has sha256 {sha256_of(Path(src))}, the benchmark pins "
                             f"{cfg.ptx_sha256}: restore the file, or fix ptx_sha256")
        rows = load_instructions(src, "train", cfg.ptx_revision or None)
        examples = [{"prompt": template.format(input=" ".join(x for x in (r["instruction"], r["input"]) if x)),
                     "completion": " " + r["output"]} for r in rows]
    if not examples:
        raise BenchError(f"ppo ptx_source = '{cfg.ptx_source}' gave no PTX examples: give another source, or set "
                         "ptx_coeff = 0")
    return examples


def resume_from(visible: list[bool], path: Path) -> bool:
    """Whether the run continues from its checkpoint: the main process decides (visible[0], whether it sees the
    file), and every process that must then load it has to see it too, else all fail together (without a shared
    filesystem a rank would start from step 0 and pair its collectives wrongly with the others')."""
    blind = [str(i) for i, seen in enumerate(visible) if not seen]
    if visible[0] and blind:
        raise BenchError(f"{path} is on the main process but process(es) {', '.join(blind)} cannot see it: put the "
                         "stage's work folder on a filesystem every node shares, or delete the file to start over")
    return visible[0]


def decide_resume(m: Models, ckpt: Path) -> bool:
    """resume_from on every process's view of `ckpt`, gathered in rank order (the main process's first): every
    rank gets the main process's decision, as a broadcast would, and sees who else can read the file."""
    from accelerate.utils import gather_object
    return resume_from(gather_object([ckpt.exists()]), ckpt)


def train_ppo(cfg: PPOConfig, sft: Path, reward: Path, cost: Path, rows: list[dict], template: str, work: Path,
              seed: int, downloads: Path | None = None, log=print) -> None:
    from transformers import AutoTokenizer

    from safealign.methods.sharding import requested
    torch.manual_seed(seed)
    check_settings(cfg, "ppo")
    check_processes(cfg, int(os.environ.get("WORLD_SIZE", "1")))       # before six models are loaded
    prompts, too_long = training_prompts(rows, template, AutoTokenizer.from_pretrained(sft), cfg.max_length)
    if not prompts:
        raise BenchError(f"ppo: every training prompt is {cfg.max_length} tokens or longer: raise max_length")
    steps = total_steps(cfg, len(prompts))
    m = Models(sft, reward, cost, cfg, steps, sharded=requested())
    if too_long and m.acc.is_main_process:
        log(f"ppo: dropped {too_long} training prompts of {cfg.max_length} tokens or more (no room for an answer)")
    with m.acc.main_process_first():       # a URL or hub source is downloaded once, by the main process
        examples = ptx_examples(cfg, rows, template, downloads or work / "downloads", log) if cfg.ptx_coeff > 0 \
            else []
    log_lambda, window, curves, first = math.log(cfg.lambda_init), deque(maxlen=cfg.episode_window), [], 0
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "checkpoint.pt"
    if decide_resume(m, ckpt):          # a killed run: continue from its last checkpoint
        state = load_checkpoint(ckpt, m)
        log_lambda, curves, first = state["log_lambda"], state["curves"], state["step"]
        window.extend(state["window"])
    engine = None
    if cfg.rollouts == "vllm":      # started from the actor as it is now (a resumed run's, too)
        actor = m.core(m.actor)
        engine = VLLMRollouts(actor, m.tok, work / "rollout-weights", seed, actor.config.max_position_embeddings,
                              cfg.vllm_memory)
    try:
        ppo_loop(m, cfg, prompts, examples, seed, (first, steps), (log_lambda, window, curves), ckpt, engine)
    finally:
        if engine is not None:
            engine.close()
            shutil.rmtree(work / "rollout-weights", ignore_errors=True)
    m.save_actor(work / "model")
    if m.acc.is_main_process:
        m.tok.save_pretrained(work / "model")
        write_jsonl(work / "curves.jsonl", curves)
        (work / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
        plot_curves(curves, work / "curves.png", cfg.algorithm)
        ckpt.unlink(missing_ok=True)
    m.acc.wait_for_everyone()


def check_settings(cfg: PPOConfig, where: str) -> None:
    """Settings that cannot work, one line each, before any model loads (at planning, and again in the stage)."""
    from safealign.data import is_missing_file
    from safealign.sources import is_url
    if cfg.repo_multiplier not in REPO_MULTIPLIERS:
        raise BenchError(f"{where} repo_multiplier = '{cfg.repo_multiplier}': choose from "
                         f"{', '.join(REPO_MULTIPLIERS)}")
    if cfg.ptx_coeff <= 0:
        return
    if not cfg.ptx_source:
        raise BenchError(f"{where} ptx_coeff = {cfg.ptx_coeff} needs ptx_source: an Alpaca-format file, hub id (Safe "
                         f"RLHF: tatsu-lab/alpaca) or URL, or '{SAFE_ANSWERS}'; or set ptx_coeff = 0")
    if cfg.ptx_source != SAFE_ANSWERS and not is_url(cfg.ptx_source) and is_missing_file(cfg.ptx_source):
        raise BenchError(f"{where} ptx_source {cfg.ptx_source} does not exist: check the path")


def check_processes(cfg: PPOConfig, processes: int) -> None:
    """The settings a launch of `processes` processes cannot run with, one line each (also checked at planning)."""
    if cfg.rollouts not in BACKENDS:
        raise BenchError(f"ppo rollouts = '{cfg.rollouts}': choose from {', '.join(BACKENDS)}")
    if cfg.rollout_batch % processes:
        raise BenchError(f"ppo rollout_batch = {cfg.rollout_batch} does not split over {processes} processes: give "
                         f"a multiple of {processes}")
    if cfg.rollouts == "vllm" and cfg.lora_rank > 0:
        raise BenchError("ppo rollouts = 'vllm' with lora_rank > 0 is not built (the engine would need merged "
                         "weights every step): use rollouts = 'hf' with LoRA")
    if cfg.rollouts == "vllm" and processes > 1:
        raise BenchError("ppo rollouts = 'vllm' runs in one process: set launch.processes = 1, or leave 'rl' out "
                         "of launch.kinds, or use rollouts = 'hf'")


def ppo_loop(m: Models, cfg: PPOConfig, prompts: list[str], examples: list[dict], seed: int, span: tuple,
             state: tuple, ckpt: Path, engine) -> None:
    """Steps span[0]..span[1]-1 of the loop from `state` = (log lambda, episode window, curves); the window and
    the curves are updated in place."""
    from tqdm import tqdm

    from safealign.tracking import NoTracker, tracker
    (first, steps), (log_lambda, window, curves) = span, state
    # --report-to: each step's curve values, into work/tracking (kept with the stage); a no-op when off
    track = tracker(ckpt.parent / "tracking", f"{cfg.algorithm}-{ckpt.parent.name}") if m.acc.is_main_process \
        else NoTracker()
    with tqdm(total=steps, initial=first, desc=cfg.algorithm, unit="step", disable=not m.acc.is_main_process) as bar:
        for step in range(first, steps):
            mine, at = shard([prompts[i] for i in shuffled_pass(len(prompts), cfg.rollout_batch, step, seed)], m)
            batch = rollout(m, mine, row_seeds(seed, step, at, len(mine)), cfg, engine)
            costs, rewards = m.acc.gather(batch["cost"]), m.acc.gather(batch["reward"])   # every process's episodes
            log_lambda, figure = multiplier_step(cfg, log_lambda, window, costs, step)
            lam = math.exp(log_lambda)
            ptx = None
            if examples:       # PTX examples in their own shuffled passes, one batch per step
                picks, _ = shard(shuffled_pass(len(examples), cfg.rollout_batch, step, seed + 1), m)
                ptx = {k: v.to(m.acc.device) for k, v in
                       ptx_batch(m.tok, [examples[i] for i in picks], cfg.max_length).items()}
            lr = m.sched.get_last_lr()[0]
            stats = ppo_step(m, batch, lam, cfg, ptx)
            if engine is not None:
                engine.sync(m.core(m.actor), m.tok)
            curves.append({"step": step, "reward": float(rewards.mean()), "cost": float(costs.mean()),
                           "unsafe_share": float((costs > 0).float().mean()), "lambda": lam,
                           "window": figure, "actor_lr": lr, **stats})
            track.log({k: v for k, v in curves[-1].items() if k != "step"}, step)
            bar.set_postfix(reward=f"{curves[-1]['reward']:.2f}", cost=f"{curves[-1]['cost']:.2f}", lam=f"{lam:.2f}")
            bar.update()
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < steps:
                save_checkpoint(ckpt, m, step + 1, log_lambda, window, curves)
    track.finish()


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


def score_models(run, cfg: PPOConfig) -> dict:
    """{"reward": spec, "cost": spec}: the score models trained from pi_ref on the preference data; stages shared by
    every method with the same score-model settings (saferlhf, repo, mocan)."""
    from safealign.methods.score_model import ScoreModelConfig
    max_len = int(run.config.get("train", {}).get("max_length", 512))
    scores = {}
    for kind, epochs in (("reward", cfg.reward_model_epochs), ("cost", cfg.cost_model_epochs)):
        sm = ScoreModelConfig(kind=kind, epochs=epochs, learning_rate=cfg.score_model_lr,
                              batch_size=cfg.score_model_batch, micro_batch=cfg.score_model_micro_batch,
                              max_length=max_len, lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                              lora_modules=list(cfg.lora_modules), bf16=cfg.bf16)
        scores[kind] = run.stage("score-model", "safealign.methods.ppo:score_stage",
                                 {"score": asdict(sm), "seed": run.seed, "limit": run.limit, "template": run.template},
                                 {"sft": run.reference, "data": run.data_stage}, f"{kind} model")
    return scores


def score_stage(job) -> None:
    """A reward or cost model (methods/score_model.py), its held-out figures logged for the user."""
    from safealign.methods.score_model import ScoreModelConfig, train_score_model
    from safealign.pipeline import data_rows, train_rows
    c = job.config
    sm = ScoreModelConfig(**c["score"])
    train_score_model(sm, job.inputs["sft"].model, train_rows(job), data_rows(job.inputs["data"], "test", c["limit"]),
                      c["template"], job.work, c["seed"])
    metrics = json.loads((job.work / "metrics.json").read_text())
    job.log(f"{sm.kind} model held-out: {metrics}")
    if sm.kind == "cost":
        job.log(f"cost model: dropped {metrics['dropped_train_pairs']} train and {metrics['dropped_test_pairs']} "
                "test pairs whose safer_response_id contradicts is_response_*_safe")


def rl_config(run, name: str, params: dict) -> PPOConfig:
    from safealign.methods.training import from_dict
    train_bf16 = {"bf16": bool(run.config.get("train", {}).get("bf16", False))}    # [methods.<name>] may override
    cfg = from_dict(PPOConfig, {**train_bf16, **run.method_settings(name, params)}, f"methods.{name}")
    if cfg.algorithm not in ("saferlhf", "repo"):
        raise BenchError(f"[methods.{name}] algorithm must be 'saferlhf' or 'repo', got '{cfg.algorithm}'")
    check_settings(cfg, f"[methods.{name}]")
    launch = run.launch
    check_processes(cfg, launch.processes if "rl" in launch.kinds else 1)
    if cfg.lora_rank > 0 and launch.processes > 1 and launch.config == "fsdp" and \
            {"rl", "score-model"} & set(launch.kinds):
        raise BenchError(f"[methods.{name}] lora_rank > 0 under launch.config = 'fsdp' is not built for Safe "
                         "RLHF's loops: use launch.config = 'ddp' with LoRA, or lora_rank = 0")
    return cfg


def rl_method(run, name: str, params: dict) -> list:
    """`saferlhf` / `repo`: reward model, cost model (stages shared by both), then PPO from the SFT model."""
    cfg = rl_config(run, name, params)
    scores = score_models(run, cfg)
    return [(name, run.stage("rl", "safealign.methods.ppo:rl_stage", {"ppo": asdict(cfg), "seed": run.seed,
                             "limit": run.limit, "template": run.template},
                             {"sft": run.reference, "reward": scores["reward"], "cost": scores["cost"],
                              "data": run.data_stage}, name))]


def rl_stage(job) -> None:
    from safealign.methods.training import from_dict
    from safealign.pipeline import train_rows
    c, i = job.config, job.inputs
    train_ppo(from_dict(PPOConfig, c["ppo"], "ppo"), i["sft"].model, i["reward"].model, i["cost"].model,
              train_rows(job), c["template"], job.work, c["seed"], downloads=job.root / "downloads", log=job.log)


def rl_target(run, name: str, params: dict) -> list:
    """The optimum PPO-Lagrangian aims at on the exact benchmark: its actor maximises (r - lambda c)/(1 + lambda)
    - kl_coeff KL (REFERENCE §5), whose fixed point is the lambda where E[c] = threshold. RePO's is the per-prompt
    version, each prompt meeting the threshold on its own (its rectified constraint, REFERENCE §6)."""
    import numpy as np

    from safealign.exact import LAMBDA_CAP, solve_lambda
    cfg = rl_config(run, name, params)
    logp_ref, r, g = run.exact_arrays()
    per_prompt = cfg.algorithm == "repo"
    lam = solve_lambda(logp_ref, r, g, cfg.kl_coeff, -cfg.threshold, normalised=True, per_prompt=per_prompt)
    plain = solve_lambda(logp_ref, r, g, cfg.kl_coeff, -cfg.threshold, per_prompt=per_prompt)
    capped = np.minimum(lam, LAMBDA_CAP)        # an unattainable threshold: the safest policy of the family
    scale = cfg.kl_coeff * (1.0 + capped)
    return [(name, {"a": 1.0 / scale, "b": capped / scale, "loss": cfg.algorithm, "lambda_target": lam,
                    "lambda_star": plain, "front": (cfg.kl_coeff, True)})]
