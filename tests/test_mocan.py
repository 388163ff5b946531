"""MoCAN as CAN's code runs it (shuoli90/CAN): 24 raw pi_ref answers per prompt for the dual, CAN's DPO settings
on `paper`, and a bound no multiplier meets refused instead of turned into NaN pseudo-labels."""
import math

import numpy as np
import pytest
from helpers import tiny_model

from safealign import BenchError
from safealign.methods import mocan


def test_dual_lambda_on_a_hand_computable_prompt():
    """One prompt, two equally likely answers with g = +1 and -1 and equal reward, beta 1: pi_lambda puts
    weight e^lambda / (e^lambda + e^-lambda) on the first, so E[g] = tanh(lambda); bound 0.5 needs atanh(0.5)."""
    logw, r, g = np.log([[0.5, 0.5]]), np.zeros((1, 2)), np.array([[1.0, -1.0]])
    assert mocan.dual_lambda(logw, r, g, beta=1.0, threshold=-0.5) == pytest.approx(math.atanh(0.5), rel=1e-9)
    assert mocan.dual_lambda(logw, r, g, beta=1.0, threshold=0.5) == 0.0      # pi_ref already meets E[cost] <= 0.5


def test_an_unreachable_bound_is_one_line_naming_the_threshold():
    """Every sample costs at least 1 (g <= -1), so E[cost] <= 0 is out of reach for every lambda: the old code
    went on with lambda* = inf, r + inf * g = NaN when g0 and g1 share a sign, and NaN labels read as 0 wins."""
    logw = np.full((3, 4), -np.log(4))
    r = np.arange(12.0).reshape(3, 4)
    g = -np.array([[1.0, 2, 3, 4], [1, 1, 5, 6], [1, 9, 9, 9]])           # each prompt's least costly answer: 1
    with pytest.raises(BenchError, match=r"methods.mocan.threshold = 0 is out of reach.*averages cost 1\b"):
        mocan.dual_lambda(logw, r, g, beta=0.1, threshold=0.0)
    with pytest.raises(BenchError, match="not finite"):
        mocan.dual_lambda(logw, r, np.where(g < -8, np.nan, g), beta=0.1, threshold=2.0)
    rows = [{"prompt": "p", "response_0": "a", "response_1": "b", "better_response_id": 1}] * 2
    s0, s1 = np.array([-np.inf, np.nan]), np.array([-np.inf, 0.0])           # r + inf * g with g < 0 on both
    with pytest.raises(BenchError, match="non-finite pseudo-preference scores"):
        mocan.pseudo_labels(rows, s0, s1, seed=0)


def test_paper_samples_24_raw_answers_and_trains_as_can(tmp_path):
    """`paper` plans CAN's 2 x 12 samples per training prompt, uncut (raw and cut answers never share a stage),
    and CAN's LoRA DPO settings for MoCAN's step; the evaluation sets keep their cut answers and old keys."""
    from safealign.run import Run
    assert mocan.MoCANConfig().samples == 24
    run = Run("paper", "mocan", tmp_path / "out", tmp_path / "cache", overrides=["judge.name=oracle"], echo=False)
    gens = {s.label: s for s in run.graph if s.kind == "generate"}
    sampled = gens["generate sft/train x24 sampled raw"]
    assert sampled.config["samples"] == 24 and sampled.config["generation"]["postprocess"] is False
    assert all("postprocess" not in s.config["generation"] for label, s in gens.items() if "train" not in label)
    cut = run.generate("sft", run.reference, "train", 24, temperature=1.0)
    assert cut.key != sampled.key and "postprocess" not in cut.config["generation"]
    step, = [s.config["step"] for s in run.graph if s.kind == "align"]
    assert (step["lora_rank"], step["lora_alpha"], step["learning_rate"], step["beta"]) == (8, 16, 5e-4, 0.1)
    assert step["lora_modules"] == ["q_proj", "k_proj", "v_proj"] and step["batch_size"] * step["grad_accum"] == 16
    assert step["warmup_ratio"] == 100 and step["epochs"] == 3


def test_raw_generation_keeps_the_text_the_cut_removes(tmp_path):
    """An untrained tiny Llama greedily repeats its last prompt token, here a newline: the cut answer is empty
    (stripped), the raw one keeps every generated newline, and cutting the raw answer gives the cut one."""
    from safealign.eval.generate import GenerationConfig, generate, postprocess
    model = tiny_model(tmp_path / "m")
    prompts = [{"prompt_id": f"p{i}", "prompt": p} for i, p in enumerate(["how do i cook rice ?", "what is a cat ?"])]
    answers = {}
    for cut in (True, False):
        cfg = GenerationConfig(backend="hf", max_new_tokens=6, postprocess=cut)
        rows = generate(model, prompts, "USER: {input} ASSISTANT:\n", cfg, tmp_path / f"{cut}.jsonl")
        answers[cut] = [r["response"] for r in rows]
    assert answers[False] == ["\n" * 6] * 2 and answers[True] == ["", ""]
    assert [postprocess(a) for a in answers[False]] == answers[True]
