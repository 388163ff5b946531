"""LoRA on one GPU's budget, checked on the tiny world: every alignment step trains adapters on the attention
projections only, its reference is the same weights with the adapters off, and what a step saves is the merged
model, so SACPO's step 2 starts from merged weights and P-SACPO merges merged weights."""
import pytest
import torch

from conftest import bench_run
from helpers import tiny_model
from safealign import BenchError, world
from safealign.methods.preference import StepConfig, make_trainer
from safealign.models import load_policy
from test_sacpo_tiny import stage_of


def test_lora_sacpo_and_psacpo_on_tiny(reference_only_cache, tmp_path):
    cache = reference_only_cache
    r = bench_run("sacpo@0.025,psacpo@0.5", tmp_path / "out", cache, "--set", "train.lora_rank=8",
                  "--set", "train.lora_alpha=16", "--set", "train.learning_rate=1e-3", "--set", "train.epochs=0.5",
                  "--set", "diagnostics.samples=0")
    assert r.returncode == 0, r.stderr[-3000:]
    sft, _ = stage_of(cache, "sft")
    dpo_h, _ = stage_of(cache, "dpo-h")
    step2, record = stage_of(cache, "sacpo@0.01")
    assert record["config"]["step"]["lora_rank"] == 8 and record["inputs"]["policy"] == str(dpo_h)
    for stage in (dpo_h, step2):      # a plain checkpoint: the adapters are merged in, none saved beside it
        assert not (stage / "model" / "adapter_config.json").exists()
    w = {name: load_policy(p / "model")[0].state_dict() for name, p in
         (("sft", sft), ("h", dpo_h), ("hs", step2), ("m", stage_of(cache, "psacpo@0.5")[0]))}
    q, mlp = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"
    # LoRA touched q/k/v/o and nothing else: the MLP is SFT's to the bit, the attention moved at each step.
    assert torch.equal(w["h"][mlp], w["sft"][mlp]) and torch.equal(w["hs"][mlp], w["sft"][mlp])
    assert not torch.allclose(w["h"][q], w["sft"][q]) and not torch.allclose(w["hs"][q], w["h"][q])
    assert torch.allclose(w["m"][q], 0.5 * w["h"][q] + 0.5 * w["hs"][q], atol=1e-6)    # P-SACPO on merged weights
    (tmp_path / "out" / "summary.csv").read_text().index("psacpo@0.5")


def test_lora_needs_the_step_to_start_from_its_reference(tmp_path):
    a, b = tiny_model(tmp_path / "a"), tiny_model(tmp_path / "b", seed=1)
    cfg = StepConfig(lora_rank=4, epochs=1, batch_size=8, max_length=64)
    with pytest.raises(BenchError, match="lora_rank = 4.*adapters off"):
        make_trainer(cfg, a, b, world.build()["train"][:8], "{input}", tmp_path / "w", seed=0)


def test_safe_rlhf_with_lora_holds_three_bases_and_saves_merged_models(tmp_path):
    """Safe RLHF's loops with adapters: the frozen reference, reward and cost models are the actor's and the
    critics' bases with the adapters off (scored to 1e-5 as the separate models score), and the score model and
    the actor are saved merged, changed only where the adapters sit."""
    from transformers import AutoModelForSequenceClassification

    from helpers import score_model
    from safealign.methods import ppo
    from safealign.methods.rollouts import row_seeds
    from safealign.methods.score_model import ScoreModelConfig, end_scores, load_score_model, train_score_model
    sft = tiny_model(tmp_path / "sft")
    rows = world.build()["train"][:16]
    template = "USER: {input} ASSISTANT:"
    cfg = ScoreModelConfig(kind="cost", epochs=1, batch_size=8, learning_rate=1e-2, lora_rank=4)
    train_score_model(cfg, sft, rows, rows[:4], template, tmp_path / "cm", seed=0)
    cm = tmp_path / "cm" / "model"
    assert not (cm / "adapter_config.json").exists()
    start = AutoModelForSequenceClassification.from_pretrained(sft, num_labels=1).state_dict()
    trained = AutoModelForSequenceClassification.from_pretrained(cm, num_labels=1).state_dict()
    q, mlp = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(trained[mlp], start[mlp]) and not torch.allclose(trained[q], start[q])

    rm = score_model(tmp_path / "rm", sft, 1)
    pcfg = ppo.PPOConfig(steps=2, rollout_batch=4, max_new_tokens=8, actor_lr=1e-2, critic_lr=1e-3, lora_rank=4)
    m = ppo.Models(sft, rm, cm, pcfg, steps=2)
    assert m.ref is None and m.rm is None and m.cm is None
    with torch.no_grad():       # trained adapters and heads (as after some steps): the twins must not see them
        for model in (m.actor, m.vr, m.vc):
            for p in (p for p in m.core(model).parameters() if p.requires_grad):
                p.add_(0.1 * torch.randn_like(p))
    prompts = [template.format(input=r["prompt"]) for r in rows[:4]]
    b = ppo.rollout(m, prompts, row_seeds(0, 0, 0, 4), pcfg)
    for kind, path in (("reward", rm), ("cost", cm)):
        alone = load_score_model(path).eval()      # the suite's loader: its head keeps its bias
        with torch.no_grad():
            expected = end_scores(alone, b["seq"], b["attn"], b["pos"])
        assert b[kind].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    with torch.no_grad():
        plain = ppo.token_logps(load_policy(sft)[0], b["seq"], b["attn"], b["pos"], b["start"])
    assert torch.allclose(b["ref_logp"], plain, atol=1e-5) and not torch.allclose(b["old_logp"], plain, atol=1e-3)
    assert not torch.allclose(b["v_r"][:, -1], b["reward"], atol=1e-3)      # the critic itself has moved

    ppo.train_ppo(pcfg, sft, rm, cm, rows, template, tmp_path / "rl", seed=0)
    assert not (tmp_path / "rl" / "model" / "adapter_config.json").exists()
    actor, base = load_policy(tmp_path / "rl" / "model")[0].state_dict(), load_policy(sft)[0].state_dict()
    assert torch.equal(actor[mlp], base[mlp]) and not torch.allclose(actor[q], base[q])
    with pytest.raises(BenchError, match="rollouts = 'vllm' with lora_rank > 0"):
        ppo.check_processes(ppo.PPOConfig(lora_rank=4, rollouts="vllm"), 1)
