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
