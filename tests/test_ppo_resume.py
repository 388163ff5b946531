"""A PPO run killed mid-stage resumes from its checkpoint and ends exactly as an uninterrupted run."""
import json

import pytest
import torch

from helpers import score_model, tiny_model
from safealign import world
from safealign.methods import ppo


def test_killed_ppo_resumes_to_identical_curves(tmp_path, monkeypatch):
    sft = tiny_model(tmp_path / "sft")
    rm, cm = score_model(tmp_path / "rm", sft, 1), score_model(tmp_path / "cm", sft, 2)
    rows = world.build()["train"][:10]
    # 2 shuffled passes of 3 batches (the kill falls in the second pass), a warmup-then-cosine actor schedule
    # and PTX batches: all of it must continue from the checkpoint exactly
    cfg = ppo.PPOConfig(epochs=2, rollout_batch=4, max_new_tokens=8, save_every=2, actor_lr=1e-3, critic_lr=1e-3,
                        actor_warmup_ratio=0.34, ptx_coeff=1.0, ptx_source="safe-answers")
    assert ppo.total_steps(cfg, len(rows)) == 6
    template = "USER: {input} ASSISTANT:"
    ppo.train_ppo(cfg, sft, rm, cm, rows, template, tmp_path / "a", seed=0)

    real_step, calls = ppo.ppo_step, []

    def dies_at_step_6(*args, **kw):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt          # killed after the checkpoint at step 4, inside step 6
        return real_step(*args, **kw)

    monkeypatch.setattr(ppo, "ppo_step", dies_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        ppo.train_ppo(cfg, sft, rm, cm, rows, template, tmp_path / "b", seed=0)
    assert (tmp_path / "b" / "checkpoint.pt").exists() and not (tmp_path / "b" / "model").exists()
    monkeypatch.setattr(ppo, "ppo_step", real_step)
    ppo.train_ppo(cfg, sft, rm, cm, rows, template, tmp_path / "b", seed=0)

    read = lambda d: [json.loads(x) for x in (d / "curves.jsonl").read_text().splitlines()]  # noqa: E731
    assert read(tmp_path / "a") == read(tmp_path / "b")
    lrs = [c["actor_lr"] for c in read(tmp_path / "a")]
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(5e-4) and lrs[2] == pytest.approx(1e-3) and lrs[-1] < lrs[2]
    assert all(c["ptx_loss"] > 0 for c in read(tmp_path / "a"))
    assert not (tmp_path / "b" / "checkpoint.pt").exists()
    from transformers import AutoModelForCausalLM
    wa = AutoModelForCausalLM.from_pretrained(tmp_path / "a" / "model").state_dict()
    wb = AutoModelForCausalLM.from_pretrained(tmp_path / "b" / "model").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
