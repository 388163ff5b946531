"""The PPO loop's six models and its checkpoints (methods/ppo.py runs the loop).

Without LoRA: the actor and the frozen reference from SFT, the frozen reward and cost models, and a reward and a
cost critic initialised from them. With LoRA the three frozen ones are the trained ones' bases with the adapters
off. Single process or DDP: accelerate prepares them; under an FSDP launch all six are sharded, one after the
other, each read from its checkpoint by process 0 alone and spread over the others' shards (methods/sharding.py).

Precision as Safe RLHF's DeepSpeed bf16 engines have it (safe-rlhf:safe_rlhf/configs/deepspeed_config.py, bf16
enabled): the trained models (actor, critics) are float32 master weights with float32 Adam states whatever the
checkpoints' stored dtype, and with `bf16` every model computes under bf16 autocast (FSDP: a bf16 mixed-precision
policy, gradients reduced in float32). The frozen ones keep their stored dtype. The actor is saved in the dtype
the SFT checkpoint came in.
"""
from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from safealign import BenchError
from safealign.methods.score_model import ADAM_BETAS, EndScorer, adamw, end_scores, load_score_model

if TYPE_CHECKING:
    from safealign.methods.ppo import PPOConfig


def token_logps(model, seq, attn, pos, start: int) -> torch.Tensor:
    """log pi(token) of each answer token (positions start..), from one forward pass."""
    logits = model(input_ids=seq, attention_mask=attn, position_ids=pos).logits[:, start - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, seq[:, start:, None])[..., 0]


class Models:
    """The six models on accelerate's device. The actor and the critics are prepared by accelerate (DDP-wrapped
    under a launch), or with `sharded` all six are split over the processes (methods/sharding.py, FSDP2);
    `core(...)` is the bare model, for the passes without gradients."""

    def __init__(self, sft: Path, reward: Path, cost: Path, cfg: PPOConfig, steps: int, sharded: bool = False):
        from accelerate import Accelerator
        from transformers import AutoTokenizer
        if sharded and cfg.lora_rank > 0:
            raise BenchError("ppo lora_rank > 0 under FSDP is not built: use launch.config = 'ddp' with LoRA")
        self.acc = Accelerator(cpu=not torch.cuda.is_available())
        self.sft, self.bf16, self.sharded = sft, cfg.bf16, sharded
        self.tok = AutoTokenizer.from_pretrained(sft)
        self.tok.pad_token = self.tok.pad_token or self.tok.eos_token
        self.scorers = {}
        self._load(sft, reward, cost, cfg)
        if sharded:
            from safealign.methods import sharding
            sharding.report(self.acc, {"actor": self.actor, "reference": self.ref, "reward critic": self.vr,
                                       "cost critic": self.vc, "reward model": self.rm, "cost model": self.cm})
        self._optimisers(cfg, steps)

    def _load(self, sft: Path, reward: Path, cost: Path, cfg: PPOConfig) -> None:
        from transformers import AutoModelForCausalLM

        from safealign.methods.sharding import causal_lm_skeleton, score_model_skeleton
        # trained: float32 master weights (a bf16 checkpoint would otherwise be stepped in bf16, where most
        # updates of lr 1e-5 round away); critics start as the score models, head and bias included
        f32 = torch.float32
        self.actor = self._place(lambda: AutoModelForCausalLM.from_pretrained(sft, dtype=f32),
                                 lambda: causal_lm_skeleton(sft, f32))
        self.vr, self.vc = (self._place(lambda p=p: load_score_model(p, head="token", dtype=f32),
                                        lambda p=p: score_model_skeleton(p, "token", f32)) for p in (reward, cost))
        self.ref = self.rm = self.cm = None          # with LoRA: the trained models with their adapters off
        if cfg.lora_rank > 0:
            self._adapters(cfg)
        else:                                        # frozen: as stored
            self.ref = self._place(lambda: AutoModelForCausalLM.from_pretrained(sft), lambda: causal_lm_skeleton(sft),
                                   frozen=True)
            # the frozen score models are read through their parts (end_scores): an EndScorer is the module called
            self.rm, self.cm = (self._place(lambda p=p: load_score_model(p), lambda p=p: score_model_skeleton(p),
                                            frozen=True, scorer=kind)
                                for kind, p in (("reward", reward), ("cost", cost)))
        for m in (self.rm, self.cm, self.vr, self.vc):
            if m is not None:
                m.config.pad_token_id = self.tok.pad_token_id

    def _place(self, load, build, frozen: bool = False, scorer: str | None = None):
        """One model: loaded (under FSDP on process 0 only, the others' built on the meta device), frozen or not,
        its compute patched (on its EndScorer when `scorer` names one), then under FSDP sharded and filled from
        process 0 before the next model loads, so that a process holds at most one whole model at a time."""
        from safealign.methods import sharding
        model = sharding.load_on_first(load, build) if self.sharded else load()
        if frozen:
            model.eval().requires_grad_(False)
        root = None
        if scorer is not None:
            root = self.scorers[scorer] = EndScorer(model)
        self._compute(model if root is None else root)
        if self.sharded:
            sharding.spread(model, root, self.acc.device, self.bf16)
        return model

    def _compute(self, *models) -> None:
        """With `bf16`, each model's forward under bf16 autocast; patched before peft, prepare and sharding wrap
        them, as their wrappers (and generate) call the model's own forward."""
        if self.bf16:
            from safealign.models import bf16_compute
            for m in models:
                bf16_compute(m, self.acc.device.type)

    def _optimisers(self, cfg: PPOConfig, steps: int) -> None:
        """Created after sharding (the optimisers hold the shards). Safe RLHF's ppo-lag.sh: actor weight decay
        0.01, cosine with warmup 0.03; critics weight decay 0 at a constant rate; every optimiser Adam with betas
        (0.9, 0.95)."""
        from transformers import get_cosine_schedule_with_warmup
        self.opt_actor = adamw(self.actor, cfg.actor_lr, cfg.actor_weight_decay)
        critic_params = [p for c in (self.vr, self.vc) for p in c.parameters() if p.requires_grad]
        self.opt_critics = torch.optim.AdamW(critic_params, lr=cfg.critic_lr, betas=ADAM_BETAS,
                                             weight_decay=cfg.critic_weight_decay)
        # not prepared: accelerate's scheduler wrapper steps once per process, and the schedule counts actor steps
        self.sched = get_cosine_schedule_with_warmup(self.opt_actor, int(cfg.actor_warmup_ratio * steps), max(steps, 1))
        if not self.sharded:
            self.actor, self.vr, self.vc, self.opt_actor, self.opt_critics = self.acc.prepare(
                self.actor, self.vr, self.vc, self.opt_actor, self.opt_critics)
            self.ref, self.rm, self.cm = (x if x is None else self.acc.prepare_model(x, evaluation_mode=True)
                                          for x in (self.ref, self.rm, self.cm))

    def clip(self, model, max_norm: float) -> None:
        from safealign.methods.sharding import clip
        clip(self.acc, model.parameters(), max_norm, self.sharded)

    def _adapters(self, cfg: PPOConfig) -> None:
        from peft import get_peft_model

        from safealign.methods.training import lora_config
        self.actor = get_peft_model(self.actor, lora_config(cfg.lora_rank, cfg.lora_alpha, cfg.lora_modules,
                                                            "CAUSAL_LM"))
        self.vr, self.vc = (get_peft_model(c, lora_config(cfg.lora_rank, cfg.lora_alpha, cfg.lora_modules,
                                                          "TOKEN_CLS")) for c in (self.vr, self.vc))

    def core(self, model):
        return self.acc.unwrap_model(model)

    def autocast(self):
        """bf16 autocast when `bf16`, for the passes that call a model through its parts (LoRA's frozen twins)."""
        return torch.autocast(self.acc.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def reference_logps(self, seq, attn, pos, start: int) -> torch.Tensor:
        if self.ref is not None:
            return token_logps(self.ref, seq, attn, pos, start)
        actor = self.core(self.actor)
        with actor.disable_adapter():
            return token_logps(actor, seq, attn, pos, start)

    def scores(self, kind: str, seq, attn, pos) -> torch.Tensor:
        """The frozen reward or cost model's end scores (with LoRA: its critic twin, adapters and head off)."""
        if kind in self.scorers:
            return self.scorers[kind](seq, attn, pos)
        critic = self.core(self.vr if kind == "reward" else self.vc)
        with critic.disable_adapter(), self.autocast():
            return end_scores(critic.get_base_model(), seq, attn, pos)

    def save_actor(self, folder: Path) -> None:
        """The trained actor as one plain checkpoint, written by the main process (adapters merged; shards
        gathered, which every process takes part in)."""
        from safealign.models import cast_checkpoint, stored_dtype
        actor = self.core(self.actor)
        if self.sharded:
            from safealign.methods.sharding import full_model_state
            state = full_model_state(actor)
            if self.acc.is_main_process:
                actor.save_pretrained(folder, state_dict=state)
        elif self.acc.is_main_process:
            (actor.merge_and_unload() if self.ref is None else actor).save_pretrained(folder)
        if self.acc.is_main_process:        # in the SFT checkpoint's dtype: bf16 in, bf16 out
            cast_checkpoint(folder, stored_dtype(self.sft))


def save_checkpoint(path: Path, m: Models, step: int, log_lambda: float, window: deque, curves: list) -> None:
    """Everything the loop needs to continue exactly where it stopped, in one file replaced atomically by the main
    process (every process holds the same weights, or under FSDP their shards are gathered first). The position
    in the shuffled prompt and PTX passes and each answer's sampling seed are functions of the step
    (rl_math.shuffled_pass, rollouts.row_seeds)."""
    state = {"step": step, "log_lambda": log_lambda, "window": list(window), "curves": curves,
             "sched": m.sched.state_dict()}
    if m.sharded:
        from safealign.methods.sharding import full_state
        state["actor"], state["opt_actor"] = full_state(m.actor, m.opt_actor)
        state["critics"], state["opt_critics"] = full_state(torch.nn.ModuleList([m.vr, m.vc]), m.opt_critics)
    else:
        state.update({"actor": m.core(m.actor).state_dict(), "vr": m.core(m.vr).state_dict(),
                      "vc": m.core(m.vc).state_dict(), "opt_actor": m.opt_actor.state_dict(),
                      "opt_critics": m.opt_critics.state_dict()})
    if m.acc.is_main_process:
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
    m.acc.wait_for_everyone()


def load_checkpoint(path: Path, m: Models) -> dict:
    state = torch.load(path, weights_only=False, map_location="cpu" if m.sharded else m.acc.device)
    m.sched.load_state_dict(state["sched"])
    if m.sharded:
        from safealign.methods.sharding import load_full_state
        load_full_state(m.actor, m.opt_actor, state["actor"], state["opt_actor"])
        load_full_state(torch.nn.ModuleList([m.vr, m.vc]), m.opt_critics, state["critics"], state["opt_critics"])
        return state
    for name in ("actor", "vr", "vc"):
        m.core(getattr(m, name)).load_state_dict(state[name])
    for name in ("opt_actor", "opt_critics"):
        getattr(m, name).load_state_dict(state[name])
    return state
