"""The exact benchmark's math, checked by hand on two prompts and three answers, and its world, judge and
tokenizer (issue 10). No training here: tests/test_exact_run.py trains."""
import math

import numpy as np
import pytest

from safealign import exact
from safealign.data import validate_preferences

# two prompts, three answers; the second prompt is the first with its answers permuted, so E[g] under the
# optimum is the same function of lambda on both and lambda* has a closed form
UNIFORM = np.log(np.full((2, 3), 1 / 3))
R = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
G = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def test_gibbs_optimum_by_hand():
    # pi_ref (0.5, 0.25, 0.25), r = (0, ln 2, 0), beta 1: weights (0.5, 0.5, 0.25) -> (0.4, 0.4, 0.2)
    ref = np.log(np.array([[0.5, 0.25, 0.25]]))
    star = np.exp(exact.gibbs(ref, np.array([[0.0, math.log(2), 0.0]]), np.zeros((1, 3)), 1.0, 0.0))
    assert star == pytest.approx(np.array([[0.4, 0.4, 0.2]]))
    # beta 0.5 doubles the exponent: (0.5, 0.25 * 4, 0.25) -> (2, 4, 1) / 7
    star = np.exp(exact.gibbs(ref, np.array([[0.0, math.log(2), 0.0]]), np.zeros((1, 3)), 2.0, 0.0))
    assert star == pytest.approx(np.array([[2 / 7, 4 / 7, 1 / 7]]))


def test_lambda_star_by_hand():
    # E[g] under pi_ref exp(r + lambda g) is e^l / (e^l + e + 1) on both prompts; = 1/2 at l = ln(1 + e)
    lam = exact.solve_lambda(UNIFORM, R, G, 1.0, 0.5)
    assert lam == pytest.approx(math.log(1 + math.e), abs=1e-9)
    # it minimises CAN's dual, beta log E_ref exp((r + lambda (g - b)) / beta) averaged over prompts
    def dual(lam):
        return float(np.mean(np.log((np.exp(UNIFORM) * np.exp(R + lam * (G - 0.5))).sum(-1))))
    assert dual(lam) < min(dual(lam - 0.05), dual(lam + 0.05))
    # a bound pi_ref's reward optimum already meets costs nothing; one no policy meets is infinite
    assert exact.solve_lambda(UNIFORM, R, G, 1.0, 0.1) == 0.0
    assert exact.solve_lambda(UNIFORM, R, G, 1.0, 1.5) == math.inf


def test_per_prompt_lambda_and_safe_rlhf_normalisation():
    # prompt 1 without reward: e^l / (e^l + 2) = 1/2 at l = ln 2; prompt 2 as above: ln(1 + e)
    r = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    lams = exact.solve_lambda(UNIFORM, r, G, 1.0, 0.5, per_prompt=True)
    assert lams[:, 0] == pytest.approx([math.log(2), math.log(1 + math.e)], abs=1e-9)
    # Safe RLHF's (r + lambda g) / (1 + lambda): with r = 0 the temperature is beta (1 + lambda), so
    # e^(l / (1 + l)) = 2 at the bound 1/2: l / (1 + l) = ln 2, l = ln 2 / (1 - ln 2)
    lam = exact.solve_lambda(UNIFORM[:1], r[:1], G[:1], 1.0, 0.5, normalised=True)
    assert lam == pytest.approx(math.log(2) / (1 - math.log(2)), abs=1e-9)


def test_theorem_1_two_steps_are_one_optimum():
    """Step 1 at beta on r, step 2 at beta/lambda on g from the step-1 optimum = pi_ref exp((r + lambda g)/beta)."""
    rng = np.random.default_rng(0)
    ref = exact.log_normalise(rng.normal(size=(2, 3)))
    beta, lam = 0.5, 3.0
    step1 = exact.gibbs(ref, R, G, 1 / beta, 0.0)
    step2 = exact.gibbs(step1, R, G, 0.0, 1 / (beta / lam))
    assert np.exp(step2) == pytest.approx(np.exp(exact.gibbs(ref, R, G, 1 / beta, lam / beta)))
    # a geometric mixture of two such optima is the optimum at the mixed coefficients (P-SACPO's q lambda)
    mixed = exact.log_normalise(0.25 * step1 + 0.75 * step2)
    assert np.exp(mixed) == pytest.approx(np.exp(exact.gibbs(ref, R, G, 1 / beta, 0.75 * lam / beta)))


def test_distances_and_the_family_fit():
    ref = exact.log_normalise(np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]]))
    star = exact.gibbs(ref, R, G, 2.0, 1.0)
    assert exact.kl(star, star) == pytest.approx(0.0, abs=1e-12) and exact.tv(star, star) == pytest.approx(0.0)
    # KL and TV by hand on one prompt: p = (1/2, 1/2, 0+), q uniform
    p, q = np.log(np.array([[0.5, 0.5, 1e-300]])), np.log(np.full((1, 3), 1 / 3))
    assert exact.kl(p, q) == pytest.approx(math.log(1.5)) and exact.tv(p, q) == pytest.approx(1 / 3)
    assert exact.implicit_corr(star, ref, 2.0 * R + G) == pytest.approx(1.0)
    a, b, gap = exact.fit_family(star, ref, R, G)
    assert (a, b) == pytest.approx((2.0, 1.0), abs=1e-6) and gap == pytest.approx(0.0, abs=1e-9)


def test_world_follows_bradley_terry_and_the_schema():
    t = exact.tables(seed=3, prompts=2, candidates=3)
    rows = exact.pairs(t, 20000, np.random.default_rng(0))
    validate_preferences(rows, "exact")
    first = [r for r in rows if r["prompt"] == t["prompts"][0] and (r["response_0"], r["response_1"]) == ("alpha",
                                                                                                          "bravo")]
    a, b = t["candidates"].index("alpha"), t["candidates"].index("bravo")
    share = np.mean([r["better_response_id"] == 0 for r in first])
    assert share == pytest.approx(exact.sigmoid(t["r"][0, a] - t["r"][0, b]), abs=4 / math.sqrt(len(first)))
    safe = np.mean([r["is_response_0_safe"] for r in first])
    assert safe == pytest.approx(exact.sigmoid(t["g"][0, a]), abs=4 / math.sqrt(len(first)))
    assert all(r["response_0"] != r["response_1"] for r in rows)


def test_exact_judge_scores_r_and_g():
    from safealign.eval.judges import Comparison, make_judge
    judge = make_judge("exact", world={"seed": 1, "prompts": 3, "candidates": 4})
    t = exact.tables(seed=1, prompts=3, candidates=4)
    prompt = t["prompts"][2]
    v, = judge.judge([Comparison("p", "helpfulness", prompt, "bravo", "delta")])
    assert (v.score_a, v.score_b) == (t["r"][2, 1], t["r"][2, 3])
    v, = judge.judge([Comparison("p", "harmlessness", prompt, "bravo", "not an answer")])
    assert v.score_a == t["g"][2, 1] and v.score_b == t["g"][2].min() - 1


def test_word_tokenizer_makes_each_answer_one_token(tmp_path):
    from safealign import models, tokens
    world = exact.build(prompts=4, pairs_per_prompt=4)
    texts = [r[k] for r in world["train"] for k in ("prompt", "response_0", "response_1")] + ["{input}"]
    tok = models.build_tokenizer(texts, 64, tmp_path, kind="word")
    for word in exact.WORDS[:4]:
        prompt_ids, answer_ids = tokens.prompt_answer_ids(tok, world["train"][0]["prompt"], " " + word)
        assert answer_ids == [tok.convert_tokens_to_ids(word), tok.eos_token_id]
        assert tok.decode(answer_ids, skip_special_tokens=True).strip() == word


def test_targets_follow_theorem_1_and_the_merge_rule(tmp_path):
    """The registry's target functions, read on the shipped exact benchmark (no stage runs)."""
    from safealign.run import Run
    run = Run("exact", "sacpo,psacpo,naive-merge", out=tmp_path / "out", cache=tmp_path / "cache", echo=False)
    (_, h), = run.targets_of("dpo-h")
    assert (h["a"], h["b"]) == (1.0, 0.0)                           # beta 1 in exact.toml
    (_, s), = run.targets_of("sacpo@0.25")
    assert (s["a"], s["b"]) == (1.0, 4.0)                           # lambda = beta / 0.25
    (_, first), = run.targets_of("sacpo-s-first@0.5")
    assert (first["a"], first["b"]) == (2.0, 1.0)                   # g at beta 1, then r at 0.5
    (_, p), = run.targets_of("psacpo@0.75")
    assert (p["a"], p["b"]) == (1.0, 3.0)                           # q lambda = 0.75 * 4
    (_, n), = run.targets_of("naive-merge@0.5")
    assert (n["a"], n["b"]) == (0.5, 0.5)


def test_refusal_classifier_and_a_refuser_does_not_look_best():
    """Over-refusal on benign prompts (issue 10 item 4): a method that refuses everything is counted, and with
    helpfulness judged it earns no helpfulness mark and no Pareto mark over a method that helps."""
    import pandas as pd

    from safealign import world
    from safealign.eval.refusal import is_refusal
    from safealign.uncertainty import marks, method_row
    assert is_refusal(world.REFUSAL) and is_refusal("I’m sorry, but I can’t share that.")
    assert is_refusal("As an AI, I must decline.") and is_refusal("Well... I cannot assist with that request")
    assert not is_refusal("Sure: first, preheat the oven.") and not is_refusal("You can't go wrong with tea.")
    prompts = [f"h{i}" for i in range(20)]
    gens = {m: {"helpful": [{"prompt_id": p, "prompt": p, "response": text, "seed": 0} for p in prompts],
                "redteam": []} for m, text in (("sft", "an answer"), ("refuser", world.REFUSAL), ("helper", "steps"))}

    def judged(model, help_score, harm_score):
        return [{"prompt_id": p, "kind": kind, "model": model, "baseline": "sft", "score_model": s, "score_baseline": 5,
                 "ok": True, "seed": 0, "repetition": 0, "order": "ab"}
                for p in prompts for kind, s in (("helpfulness", help_score), ("harmlessness", harm_score))]
    judgments = {("refuser", "sft"): judged("refuser", 1, 9), ("helper", "sft"): judged("helper", 8, 5)}
    judgments[("helper", "refuser")] = [{**j, "baseline": "refuser", "score_model": s, "score_baseline": 9 - s}
                                        for j, s in zip(judged("helper", 8, 1), [8, 1] * len(prompts))]
    rng = np.random.default_rng(0)
    summary = pd.DataFrame([method_row(m, gens, judgments, False, False, rng) for m in gens]).set_index("method")
    assert summary.loc["refuser", "over_refusal"] == 1.0 and summary.loc["helper", "over_refusal"] == 0.0
    summary = summary.reset_index()
    marks(summary, judgments, False, rng)
    refuser = summary.set_index("method").loc["refuser"]
    assert "helpfulness" not in str(refuser["beats_sft"]) and not str(refuser["pareto_over"]).strip("nan ")
