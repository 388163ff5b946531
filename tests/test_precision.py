"""Trained models keep float32 master weights whatever dtype their checkpoint is stored in, and compute under bf16
autocast with bf16 = true (as Safe RLHF's DeepSpeed bf16 engines do): one step from a bf16-saved checkpoint moves
the trained weights as the same step from a float32 copy of the same values does. Stepped in bf16 itself, an
update of lr 1e-5 on weights of ~0.02 is below bf16's resolution and most weights never move (about 15% moved
where float32 moves all)."""
import shutil

import pytest
import torch

from helpers import score_model, tiny_model
from safealign import world
from safealign.models import cast_checkpoint, stored_dtype

TEMPLATE = "USER: {input} ASSISTANT:"


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """{"bf16": folder, "fp32": folder}, each holding sft, rm and cm: the same values, stored in bf16 in one and
    in float32 in the other."""
    root = tmp_path_factory.mktemp("precision")
    sft = tiny_model(root / "base" / "sft")
    score_model(root / "base" / "rm", sft, 1)
    score_model(root / "base" / "cm", sft, 2)
    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        shutil.copytree(root / "base", root / name)
        for part in ("sft", "rm", "cm"):
            cast_checkpoint(root / name / part, torch.bfloat16)        # bf16 values in both worlds
            cast_checkpoint(root / name / part, dtype)
        out[name] = root / name
    assert stored_dtype(out["bf16"] / "sft") == torch.bfloat16 and stored_dtype(out["fp32"] / "sft") == torch.float32
    return out


def snapshot(model) -> dict:
    return {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}


def moved(before: dict, model) -> float:
    """The share of the trained weights whose value changed."""
    after = dict(model.named_parameters())
    changed = sum(int((after[n].detach().float() != w).sum()) for n, w in before.items())
    return changed / sum(w.numel() for w in before.values())


def ppo_shares(folder) -> dict:
    from safealign.methods.ppo import PPOConfig, Models, ppo_step, rollout
    from safealign.methods.rollouts import row_seeds
    torch.manual_seed(0)
    cfg = PPOConfig(rollout_batch=4, max_new_tokens=6, actor_lr=1e-5, critic_lr=5e-6, bf16=True)
    m = Models(folder / "sft", folder / "rm", folder / "cm", cfg, steps=1)
    trained = [m.core(getattr(m, name)) for name in ("actor", "vr", "vc")]
    assert all(p.dtype == torch.float32 for model in trained for p in model.parameters())
    before = {name: snapshot(m.core(getattr(m, name))) for name in ("actor", "vr", "vc")}
    prompts = [TEMPLATE.format(input=r["prompt"]) for r in world.build()["train"][:4]]
    ppo_step(m, rollout(m, prompts, row_seeds(0, 0, 0, 4), cfg), 1.0, cfg, None)
    return {name: moved(before[name], m.core(getattr(m, name))) for name in before}


def score_model_share(folder, kind: str) -> float:
    """One step of the score-model loop (fit_score_model) on 4 pairs; the share of the backbone's weights moved."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safealign.methods.score_model import ScoreModelConfig, fit_score_model
    tok = AutoTokenizer.from_pretrained(folder / "sft")
    cfg = ScoreModelConfig(kind=kind, epochs=1, batch_size=4, learning_rate=2e-5, bf16=True)
    model, _ = fit_score_model(Accelerator(cpu=True), cfg, folder / "sft", tok, world.build()["train"][:4], TEMPLATE, 0)
    base = AutoModelForCausalLM.from_pretrained(folder / "sft", dtype=torch.float32).model
    before = {f"model.{n}": p.detach().float() for n, p in base.named_parameters()}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    return moved(before, model)


def dpo_share(folder, work) -> float:
    from safealign.methods.preference import StepConfig, make_trainer
    cfg = StepConfig(loss="dpo", target="safety", epochs=1, batch_size=4, learning_rate=2e-5, bf16=True, warmup_ratio=0,
                     gradient_checkpointing=False, max_length=128)
    trainer, _ = make_trainer(cfg, folder / "sft", folder / "sft", world.build()["train"][:4], TEMPLATE, work, 0)
    before = snapshot(trainer.model)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    trainer.train()
    assert trainer.state.global_step == 1
    return moved(before, trainer.model)


def test_one_ppo_step_from_a_bf16_checkpoint_moves_the_weights_a_float32_one_does(worlds):
    got = {name: ppo_shares(folder) for name, folder in worlds.items()}
    print("PPO shares moved:", got)
    for part in ("actor", "vr", "vc"):
        assert got["fp32"][part] > 0.5, part                     # the step moves most weights: a real comparison
        assert got["bf16"][part] == pytest.approx(got["fp32"][part], abs=0.01), part


@pytest.mark.parametrize("kind", ["reward", "cost"])
def test_one_score_model_step_from_a_bf16_checkpoint_moves_the_weights_a_float32_one_does(worlds, kind):
    got = {name: score_model_share(folder, kind) for name, folder in worlds.items()}
    print(f"{kind} model shares moved:", got)
    assert got["fp32"] > 0.5 and got["bf16"] == pytest.approx(got["fp32"], abs=0.01)


def test_one_dpo_step_from_a_bf16_checkpoint_moves_the_weights_a_float32_one_does(worlds, tmp_path):
    got = {name: dpo_share(folder, tmp_path / name) for name, folder in worlds.items()}
    print("DPO shares moved:", got)
    assert got["fp32"] > 0.5 and got["bf16"] == pytest.approx(got["fp32"], abs=0.01)


def test_trained_models_are_saved_in_the_dtype_their_checkpoint_came_in(worlds, tmp_path):
    """bf16 in, bf16 out (the reference saves 16-bit copies); float32 stays float32. The TRL stages' save
    (methods/training.py train_and_save) and the score-model stage's."""
    from transformers import AutoModelForCausalLM

    from safealign.methods.preference import StepConfig, train_step
    from safealign.methods.score_model import ScoreModelConfig, load_score_model, train_score_model
    rows = world.build()["train"][:4]
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        sft = worlds[name] / "sft"
        cfg = StepConfig(loss="dpo", target="safety", epochs=1, batch_size=4, bf16=True,
                         gradient_checkpointing=False, max_length=128)
        train_step(cfg, sft, sft, rows, TEMPLATE, tmp_path / name / "dpo", 0)
        saved = tmp_path / name / "dpo" / "model"
        assert stored_dtype(saved) == dtype and AutoModelForCausalLM.from_pretrained(saved).dtype == dtype
        train_score_model(ScoreModelConfig(kind="cost", epochs=1, batch_size=4, bf16=True), sft, rows, rows, TEMPLATE,
                          tmp_path / name / "cm", 0)
        assert stored_dtype(tmp_path / name / "cm" / "model") == dtype
        assert load_score_model(tmp_path / name / "cm" / "model").score.weight.dtype == dtype
