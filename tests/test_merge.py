import pytest
import torch

from helpers import tiny_model
from safealign import BenchError
from safealign.methods.merge import merge_checkpoints, merge_state_dicts


def test_merge_by_hand():
    a = {"w": torch.tensor([1.0, 2.0]), "pos": torch.tensor([0, 1])}
    b = {"w": torch.tensor([3.0, 6.0]), "pos": torch.tensor([0, 1])}
    assert torch.equal(merge_state_dicts(a, b, 0.25)["w"], torch.tensor([1.5, 3.0]))   # 0.75*1+0.25*3, 0.75*2+0.25*6
    assert torch.equal(merge_state_dicts(a, b, 0.0)["w"], a["w"])
    assert torch.equal(merge_state_dicts(a, b, 1.0)["w"], b["w"])
    assert torch.equal(merge_state_dicts(a, b, 0.5)["pos"], a["pos"])


def test_merge_refuses_other_shapes_and_names():
    with pytest.raises(BenchError, match="different architectures.*'w'.*\\(2,\\) vs \\(3,\\)"):
        merge_state_dicts({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, 0.5)
    with pytest.raises(BenchError, match="different architectures.*'v'"):
        merge_state_dicts({"w": torch.zeros(2)}, {"w": torch.zeros(2), "v": torch.zeros(1)}, 0.5)


def test_merged_checkpoint_is_the_exact_interpolation(tmp_path):
    from transformers import AutoModelForCausalLM
    a, b = tiny_model(tmp_path / "a", seed=1), tiny_model(tmp_path / "b", seed=2)
    sa = AutoModelForCausalLM.from_pretrained(a).state_dict()
    sb = AutoModelForCausalLM.from_pretrained(b).state_dict()
    for q in (0.0, 0.75, 1.0):
        merge_checkpoints(a, b, q, tmp_path / f"m{q}")
        sm = AutoModelForCausalLM.from_pretrained(tmp_path / f"m{q}").state_dict()
        for name in sa:
            expect = ((1 - q) * sa[name].double() + q * sb[name].double()).float()
            assert torch.equal(sm[name], expect), name
    ends = [AutoModelForCausalLM.from_pretrained(tmp_path / f"m{q}").state_dict() for q in (0.0, 1.0)]
    assert all(torch.equal(ends[0][n], sa[n]) and torch.equal(ends[1][n], sb[n]) for n in sa)


def test_merging_different_architectures_is_a_clear_error(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    a, deeper = tiny_model(tmp_path / "a", layers=1), tiny_model(tmp_path / "b", layers=2)
    with pytest.raises(BenchError, match="different architectures"):
        merge_checkpoints(a, deeper, 0.5, tmp_path / "m")
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=64, n_head=1, vocab_size=400)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(BenchError, match="LlamaForCausalLM.*GPT2LMHeadModel"):
        merge_checkpoints(a, tmp_path / "gpt2", 0.5, tmp_path / "m2")
