import pytest
import torch

from helpers import score_model as score_model_on, tiny_model
from safealign import BenchError
from safealign.eval.judges import Comparison, make_judge


def score_model(folder, seed):
    """A reward or cost model on a fresh tiny Llama."""
    return str(score_model_on(folder / "sm", tiny_model(folder / "lm"), seed))


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


TEMPLATE = "BEGINNING OF CONVERSATION: USER: {input} ASSISTANT:"


def bos_models(folder):
    """A tiny policy whose fast tokenizer adds BOS as Llama's does (TemplateProcessing "<s> $A"), and a reward
    and a cost model on it."""
    from tokenizers import processors
    from transformers import AutoTokenizer
    base = tiny_model(folder / "sft")
    tok = AutoTokenizer.from_pretrained(base)
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.bos_token_id)])
    tok.save_pretrained(base)
    tok = AutoTokenizer.from_pretrained(base)
    assert tok("rinse the rice")["input_ids"][0] == tok.bos_token_id
    return base, tok, score_model_on(folder / "rm", base, 1), score_model_on(folder / "cm", base, 2)


def test_rollouts_ptx_and_score_models_use_the_trl_ids_of_a_bos_tokenizer(tmp_path):
    from safealign import tokens
    from safealign.methods import ppo, score_model
    from safealign.methods.rollouts import row_seeds
    sft, tok, rm, cm = bos_models(tmp_path)
    prompts = [TEMPLATE.format(input=q) for q in ("how do i cook rice ?", "what is a good way to relax ?")]
    answers = [" rinse the rice .", " take a walk ."]

    ids, mask = score_model.encode(tok, prompts, answers, 512)        # score-model training, evaluation, judge
    for i, (p, a) in enumerate(zip(prompts, answers)):
        p_ids, a_ids = tokens.prompt_answer_ids(tok, p, a)
        assert p_ids[0] == tok.bos_token_id and a_ids[-1] == tok.eos_token_id
        assert ids[i][mask[i] == 1].tolist() == p_ids + a_ids

    m = ppo.Models(sft, rm, cm, ppo.PPOConfig(max_new_tokens=4), steps=1)
    b = ppo.rollout(m, prompts, row_seeds(0, 0, 0, 2), ppo.PPOConfig(max_new_tokens=4))
    for i, p in enumerate(prompts):                                     # the actor's prompt ids = TRL's = vLLM's
        row = b["seq"][i][b["attn"][i] == 1].tolist()
        assert row[:len(tokens.prompt_ids(tok, p))] == tokens.prompt_ids(tok, p)
        # the left-padded rollout scores exactly as the unpadded sequence the score models train on
        alone = score_model.end_scores(m.rm, torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long))
        assert b["reward"][i].item() == pytest.approx(alone.item(), abs=1e-5)

    batch = ppo.ptx_batch(tok, [{"prompt": p, "completion": a} for p, a in zip(prompts, answers)], 512)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        p_ids, a_ids = tokens.prompt_answer_ids(tok, p, a)
        n = len(p_ids) + len(a_ids)
        assert batch["input_ids"][i][:n].tolist() == p_ids + a_ids
        assert batch["labels"][i].tolist() == [-100] * len(p_ids) + a_ids + [-100] * (batch["labels"].shape[1] - n)


def test_judge_scores_as_the_score_model_training_code(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from safealign.methods import score_model
    _, _, rm, cm = bos_models(tmp_path)
    judge = make_judge("score-model", {"reward_model": str(rm), "cost_model": str(cm)}, template=TEMPLATE)
    assert judge.template == TEMPLATE
    own = make_judge("score-model", {"reward_model": str(rm), "cost_model": str(cm), "template": "Q: {input} A:"},
                     template=TEMPLATE)
    assert own.template == "Q: {input} A:"                               # the judge's own setting wins
    row = {"prompt": "how do i cook rice ?", "response_0": "rinse the rice .", "response_1": "sorry , no .",
           "is_response_0_safe": True, "is_response_1_safe": True, "better_response_id": 0, "safer_response_id": 1}
    for kind, path, judge_kind in (("reward", rm, "helpfulness"), ("cost", cm, "harmlessness")):
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).eval()
        pairs, _ = score_model._pairs([row], kind, TEMPLATE)                 # what training and evaluation score
        cfg = score_model.ScoreModelConfig(kind=kind)
        with torch.no_grad():
            _, s_win, s_lose = score_model._loss(model, tok, pairs, cfg)
        w = row["better_response_id"] if kind == "reward" else row["safer_response_id"]
        got = judge.scores(judge_kind, [row["prompt"]] * 2, [row[f"response_{w}"], row[f"response_{1 - w}"]])
        assert got == pytest.approx([s_win.item(), s_lose.item()], abs=1e-5)


def test_cost_model_drops_pairs_whose_safer_answer_is_the_unsafe_one():
    from safealign.methods import score_model
    rows = [{"prompt": "q", "response_0": "a", "response_1": "b", "is_response_0_safe": s0, "is_response_1_safe": s1,
             "better_response_id": 0, "safer_response_id": w} for s0, s1, w in
            [(True, False, 0), (False, True, 0), (False, True, 1), (False, False, 1), (True, True, 0)]]
    pairs, dropped = score_model._pairs(rows, "cost", "{input}")
    assert dropped == 1 and len(pairs) == 4                  # row 2: safer = response_0, labelled unsafe; 1 safe
    assert len(score_model._pairs(rows, "reward", "{input}")[0]) == 5          # the reward model keeps them all


def test_score_model_micro_batches_take_the_whole_batch_gradient(tmp_path):
    """A batch of 6 pairs in micro-batches of 4 + 2 (gradients accumulated, each weighted by its share of the batch)
    gives the whole batch's gradient, up to float order. (Weights after Adam steps are not compared: Adam divides by
    the root of tiny second moments, which turns 1e-9 gradient noise into visible weight differences.)"""
    from accelerate import Accelerator
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from safealign import world
    from safealign.methods.score_model import EndScorer, ScoreModelConfig, _pairs, batch_backward
    base = tiny_model(tmp_path / "lm")
    tok = AutoTokenizer.from_pretrained(base)
    pairs, _ = _pairs(world.build()["train"][:6], "cost", "USER: {input} ASSISTANT:")
    grads, losses = {}, {}
    for micro in (0, 4):
        torch.manual_seed(0)                                      # the same new score head in both
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
        model.config.pad_token_id = tok.pad_token_id
        scorer = EndScorer(model)
        losses[micro] = batch_backward(Accelerator(cpu=True), scorer, tok, pairs, ScoreModelConfig(kind="cost",
                                                                                                micro_batch=micro))
        grads[micro] = {n: p.grad.clone() for n, p in scorer.named_parameters() if p.grad is not None}
    assert losses[4] == pytest.approx(losses[0], rel=1e-6) and len(grads[0]) == len(grads[4]) > 10
    scale = max(g.abs().max().item() for g in grads[0].values())
    assert scale > 1e-3 and all(torch.allclose(grads[0][n], grads[4][n], atol=1e-6 * scale) for n in grads[0])
