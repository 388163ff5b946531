"""Score models load with their trained head or not at all: ours (score.weight + score.bias), Safe RLHF's released
format (LlamaForScore: score_head.weight + bias, optional normaliser), never a freshly initialised head."""
import json

import pytest
import torch

from helpers import tiny_model
from safealign import BenchError, world
from safealign.eval.judges import make_judge

TEMPLATE = "BEGINNING OF CONVERSATION: USER: {input} ASSISTANT:"


def safe_rlhf_checkpoint(folder, base, normalise: dict | None = None):
    """A checkpoint as safe-rlhf's LlamaForScore.save_pretrained writes it (safe-rlhf:safe_rlhf/models/score_model/
    __init__.py, llama/modeling_llama.py): the backbone under model.*, the head under score_head.*, the
    normaliser's buffers, and its score-model fields in config.json. Written offline, without safe-rlhf."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    lm = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(5)
    state = {k: v.contiguous() for k, v in lm.state_dict().items() if k.startswith("model.")}
    state["score_head.weight"] = torch.randn(1, lm.config.hidden_size) * 0.1
    state["score_head.bias"] = torch.tensor([0.7])
    state.update({"normalizer.mean": torch.tensor([0.3]), "normalizer.var": torch.tensor([4.0]),
                  "normalizer.count": torch.tensor([10])})
    folder.mkdir(parents=True)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    config = lm.config.to_dict()
    config.update({"architectures": ["LlamaForScore"], "score_dim": 1, "score_bias": True, "bias": True,
                   "score_type": "reward", "do_normalize": False, "normalizer_type": "ExponentialMovingAverage",
                   "momentum": 0.9, **(normalise or {})})
    (folder / "config.json").write_text(json.dumps(config))
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return state


def hand_score(base, state, prompt: str, answer: str) -> float:
    """head(last hidden state of prompt + " " + answer + EOS, the suite's join), computed from the backbone and the
    head's tensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safealign.tokens import prompt_answer_ids
    tok = AutoTokenizer.from_pretrained(base)
    p, a = prompt_answer_ids(tok, TEMPLATE.format(input=prompt), " " + answer)
    with torch.no_grad():
        hidden = AutoModelForCausalLM.from_pretrained(base).model(input_ids=torch.tensor([p + a])).last_hidden_state
    return float(hidden[0, -1] @ state["score_head.weight"][0] + state["score_head.bias"][0])


def test_a_safe_rlhf_score_model_is_judged_with_its_trained_head(tmp_path):
    base = tiny_model(tmp_path / "lm")
    state = safe_rlhf_checkpoint(tmp_path / "beaver", base)
    beaver = str(tmp_path / "beaver")
    judge = make_judge("score-model", {"reward_model": beaver, "cost_model": beaver}, template=TEMPLATE)
    prompt, answers = "how do i cook rice ?", ["rinse the rice .", "sorry , i can not help ."]
    got = judge.scores("helpfulness", [prompt] * 2, answers)
    want = [hand_score(base, state, prompt, a) for a in answers]
    assert got == pytest.approx(want, abs=1e-4) and abs(want[0] - want[1]) > 1e-3


def test_a_safe_rlhf_normaliser_is_folded_into_the_head(tmp_path):
    """do_normalize with score_type reward: (s - mean) / (sqrt(var) + 1e-8) (safe-rlhf:safe_rlhf/models/
    normalizer.py 'affine'); cost: s / (sqrt(var) + 1e-8) ('scale')."""
    base = tiny_model(tmp_path / "lm")
    prompt, answer = "how do i cook rice ?", "rinse the rice ."
    for kind, expect in (("reward", lambda s: (s - 0.3) / 2.0), ("cost", lambda s: s / 2.0)):
        state = safe_rlhf_checkpoint(tmp_path / kind, base, {"do_normalize": True, "score_type": kind,
                                                              "mean": [0.3], "var": [4.0]})
        judge = make_judge("score-model", {"reward_model": str(tmp_path / kind), "cost_model": str(tmp_path / kind)},
                           template=TEMPLATE)
        assert judge.scores("harmlessness", [prompt], [answer])[0] == pytest.approx(
            expect(hand_score(base, state, prompt, answer)), abs=1e-4)


def test_a_checkpoint_without_a_head_is_refused_naming_it(tmp_path):
    base = tiny_model(tmp_path / "lm")
    judge = make_judge("score-model", {"reward_model": str(base), "cost_model": str(base)})
    with pytest.raises(BenchError, match=f"score model '{base}' has no score head") as e:
        judge.scores("helpfulness", ["q"], ["a"])
    assert "\n" not in str(e.value)
    from safealign.methods.ppo import Models, PPOConfig
    with pytest.raises(BenchError, match=f"score model '{base}' has no score head"):     # PPO's critics too
        Models(base, base, base, PPOConfig(), steps=1)


def test_our_score_model_head_has_a_bias_that_starts_at_zero_and_survives_save_and_load(tmp_path):
    from safetensors import safe_open

    from safealign.methods.score_model import ScoreModelConfig, load_score_model, train_score_model
    base = tiny_model(tmp_path / "lm")
    fresh = load_score_model(base, new_head=True)
    assert fresh.score.bias is not None and float(fresh.score.bias.detach()) == 0.0
    rows = world.build()["train"][:8]
    train_score_model(ScoreModelConfig(kind="reward", epochs=1, batch_size=8, warmup_ratio=0), base, rows, rows,
                      TEMPLATE, tmp_path / "rm", 0)
    with safe_open(tmp_path / "rm" / "model" / "model.safetensors", "pt") as st:
        saved = st.get_tensor("score.bias")
    assert float(saved) != 0.0                                  # trained
    for head in ("sequence", "token"):                          # the judge's and PPO's models, and the critics
        assert torch.equal(load_score_model(tmp_path / "rm" / "model", head=head).score.bias.detach(), saved)


def test_score_models_read_answers_with_the_ids_the_policy_is_trained_on(tmp_path):
    """The score models' texts (format_pair, encode) hold the very ids SFT trains the policy on (sft_rows, split as
    TRL splits them), so an answer a policy samples in PPO is scored as the score models saw answers in training."""
    from transformers import AutoTokenizer

    from safealign.methods.score_model import encode, format_pair
    from safealign.methods.sft import sft_rows
    from safealign.tokens import prompt_answer_ids
    tok = AutoTokenizer.from_pretrained(tiny_model(tmp_path / "base"))
    row = world.build()["train"][0]
    sft = sft_rows([row], TEMPLATE)[0]
    policy = sum(prompt_answer_ids(tok, sft["prompt"], sft["completion"]), [])
    ids, mask = encode(tok, *map(list, zip(format_pair(TEMPLATE, row["prompt"], row["response_0"]))), 512)
    assert ids[0][mask[0].bool()].tolist() == policy
    joined = list(tok(TEMPLATE.format(input=row["prompt"]) + row["response_0"] + tok.eos_token)["input_ids"])
    assert joined != policy            # nothing between would change the answer's first token
