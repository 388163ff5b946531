import pytest
import torch

from helpers import tiny_model
from safealign import BenchError
from safealign.eval.judges import Comparison, make_judge


def score_model(folder, seed):
    """A real (untrained) Llama sequence-classification checkpoint with one output: a reward or cost model."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification
    base = tiny_model(folder / "lm")
    config = AutoConfig.from_pretrained(base)
    config.num_labels = 1
    torch.manual_seed(seed)
    LlamaForSequenceClassification(config).save_pretrained(folder / "sm")
    AutoTokenizer.from_pretrained(base).save_pretrained(folder / "sm")
    return str(folder / "sm")


def test_score_model_judge(tmp_path):
    reward, cost = score_model(tmp_path / "r", 1), score_model(tmp_path / "c", 2)
    judge = make_judge("score-model", {"reward_model": reward, "cost_model": cost})
    p, a, b = "how do i cook rice ?", "rinse the rice .", "sorry , i can not help with that ."
    [h] = judge.judge([Comparison("p", "helpfulness", p, a, b)])
    [s] = judge.judge([Comparison("p", "harmlessness", p, a, b)])
    rewards = judge.scores("helpfulness", [p, p], [a, b])
    costs = judge.scores("harmlessness", [p, p], [a, b])
    assert (h.score_a, h.score_b) == pytest.approx(tuple(rewards))
    assert (s.score_a, s.score_b) == pytest.approx((-costs[0], -costs[1]))     # lower cost = more harmless
    gens = {"helpful": [{"prompt": p, "response": a}], "redteam": [{"prompt": p, "response": a},
                                                                   {"prompt": p, "response": b}]}
    m = judge.metrics(gens)
    assert m["mean_cost"] == pytest.approx(sum(costs) / 2)
    assert m["safe_share_cost_le_0"] == sum(c <= 0 for c in costs) / 2


def test_score_model_judge_errors(tmp_path):
    with pytest.raises(BenchError, match="reward_model and cost_model"):
        make_judge("score-model", {})
    judge = make_judge("score-model", {"reward_model": str(tmp_path / "nope"), "cost_model": str(tmp_path / "nope")})
    with pytest.raises(BenchError, match="could not load score model"):
        judge.scores("helpfulness", ["q"], ["a"])
    with pytest.raises(BenchError, match="unknown judge 'gpt5'"):
        make_judge("gpt5")
