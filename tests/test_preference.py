import pytest
import torch

from helpers import tiny_model
from safealign import BenchError, world
from safealign.methods.preference import StepConfig, dpo_pairs, kto_rows, make_trainer, sequence_logps

ROW = {"prompt": "q", "response_0": "a", "response_1": "b", "is_response_0_safe": True, "is_response_1_safe": False,
       "better_response_id": 1, "safer_response_id": 0}


def test_dpo_pairs_use_the_right_label():
    h = dpo_pairs([ROW], "helpfulness", "U: {input} A:")[0]
    s = dpo_pairs([ROW], "safety", "U: {input} A:")[0]
    assert (h["prompt"], h["chosen"], h["rejected"]) == ("U: q A:", " b", " a")
    assert (s["chosen"], s["rejected"]) == (" a", " b")


def test_kto_labels_and_undesirable_weight_by_hand():
    rows = [ROW, {**ROW, "is_response_1_safe": True, "better_response_id": 0}]
    h, wh = kto_rows(rows, "helpfulness", "{input}")
    assert [r["label"] for r in h] == [False, True, True, False] and wh == 1.0
    s, ws = kto_rows(rows, "safety", "{input}")
    assert [r["label"] for r in s] == [True, False, True, True] and ws == 3.0      # 3 safe / 1 unsafe
    with pytest.raises(BenchError, match="both safe and unsafe"):
        kto_rows([{**ROW, "is_response_1_safe": True}], "safety", "{input}")


@pytest.mark.parametrize("loss", ["dpo", "kto"])
def test_second_step_reference_is_the_frozen_step1_model(tmp_path, loss):
    """SACPO step 2: the policy starts from the step-1 model and the reference IS the step-1 model, unchanged
    by training: its log-probabilities equal those of the step-1 checkpoint exactly."""
    from safealign.models import load_policy
    step1 = tiny_model(tmp_path / "step1")
    rows = world.build()["train"][:64]
    cfg = StepConfig(loss=loss, target="safety", beta=0.025, epochs=1, learning_rate=1e-3, batch_size=16,
                     max_length=64, save_steps=1000)
    trainer, tok = make_trainer(cfg, step1, step1, rows, "USER: {input} ASSISTANT:", tmp_path / "w", seed=0)
    trainer.train()
    pairs = dpo_pairs(rows[:16], "safety", "USER: {input} ASSISTANT:")
    prompts, texts = [p["prompt"] for p in pairs], [p["chosen"] for p in pairs]
    fresh, _ = load_policy(step1)
    ref_logps = sequence_logps(trainer.ref_model, tok, prompts, texts)
    assert torch.equal(ref_logps, sequence_logps(fresh, tok, prompts, texts))
    trainer.model.eval()
    assert not torch.allclose(sequence_logps(trainer.model, tok, prompts, texts), ref_logps)


def test_shared_reference_logps_are_the_references_and_train_as_the_reference_beside_the_policy(tmp_path):
    """Sweep sharing: the reflogps pass gives log pi_ref of every pair (equal to our own sequence_logps of the
    reference), and a DPO step reading them takes the same steps as one running the reference in every batch:
    the same losses (to float noise: only the batching of the reference pass differs) and weights."""
    import json

    from safealign.methods.preference import reference_logps, train_step
    from safealign.models import load_policy
    step1 = tiny_model(tmp_path / "step1")
    rows, template = world.build()["train"][:48], "USER: {input} ASSISTANT:"
    cfg = StepConfig(target="safety", beta=0.05, epochs=1, learning_rate=1e-3, batch_size=8, max_length=512,
                     save_steps=1000)       # no pair truncated, so sequence_logps (which never truncates) compares
    table = reference_logps(cfg, step1, rows, template, tmp_path / "ref")
    assert [r["pair"] for r in table] == list(range(48))
    pairs = dpo_pairs(rows, "safety", template)
    ref, tok = load_policy(step1)
    for side in ("chosen", "rejected"):
        ours = sequence_logps(ref, tok, [p["prompt"] for p in pairs], [p[side] for p in pairs])
        assert torch.allclose(torch.tensor([r[side] for r in table]), ours, atol=1e-4)
    train_step(cfg, step1, step1, rows, template, tmp_path / "inline", seed=0)
    train_step(cfg, step1, step1, rows, template, tmp_path / "shared", seed=0, ref_logps=table)
    losses = {w: [h["loss"] for h in json.loads((tmp_path / w / "log_history.json").read_text()) if "loss" in h]
              for w in ("inline", "shared")}
    assert len(losses["inline"]) >= 1 and losses["shared"] == pytest.approx(losses["inline"], abs=1e-4)
    a, b = (load_policy(tmp_path / w / "model")[0].state_dict() for w in ("inline", "shared"))
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    with pytest.raises(BenchError, match="other data"):
        train_step(cfg, step1, step1, rows[:10], template, tmp_path / "bad", seed=0, ref_logps=table)
