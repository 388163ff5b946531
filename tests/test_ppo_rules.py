"""The PPO loop's rules against Safe RLHF's code and the RePO paper: PTX on its own data, the multiplier's window
and RePO's rectified multiplier, prompt + answer length caps, de-duplicated prompts, several EOS ids, and the
resume decision. Hand-computable cases first, then real tiny models."""
import json
import math
from collections import deque

import pytest
import torch

from helpers import score_model, tiny_model
from safealign import BenchError
from safealign.methods import ppo
from safealign.methods.rl_math import answer_budgets, answer_mask
from safealign.run import Run

TEMPLATE = "USER: {input} ASSISTANT:"


def pref(prompt, a0, a1, better, safe0, safe1):
    return {"prompt": prompt, "response_0": a0, "response_1": a1, "better_response_id": better,
            "safer_response_id": 0 if safe0 else 1, "is_response_0_safe": safe0, "is_response_1_safe": safe1}


# -- the multiplier ------------------------------------------------------------------------------------------
def test_the_multiplier_reads_a_window_that_spans_steps_by_hand():
    cfg = ppo.PPOConfig(episode_window=6, lambda_lr=0.1, lambda_init=1.0)
    window, log_lam = deque(maxlen=cfg.episode_window), 0.0
    want = 0.0
    for step, costs, figure in ((0, [1., 2., 3., 4.], 2.5),              # 4 episodes a step, window 6
                                (1, [5., 6., 7., 8.], (3 + 4 + 5 + 6 + 7 + 8) / 6),
                                (2, [0., 0., 0., -3.], (7 + 8 + 0 + 0 + 0 - 3) / 6)):
        log_lam, got = ppo.multiplier_step(cfg, log_lam, window, torch.tensor(costs), step)
        want += 0.1 * math.exp(want) * figure               # log lambda += lr * lambda * (J_c - 0)
        assert got == pytest.approx(figure) and log_lam == pytest.approx(want)
    # paper: Safe RLHF's per-rank window of 128, averaged over its 8 ranks = the last 1024 episodes (8 steps)
    from safealign.config import load_benchmark
    for name in ("saferlhf", "repo"):
        section = load_benchmark("paper")["methods"][name]
        assert section["episode_window"] == 8 * section["rollout_batch"] == 1024


def test_repo_multiplier_is_dual_ascent_on_the_rectified_cost_and_never_falls():
    cfg = ppo.PPOConfig(algorithm="repo", episode_window=4)
    assert cfg.repo_multiplier == "rectified"
    window = deque(maxlen=4)
    # {C}^+ = [0, 0.5, 0, 3] -> mean 0.875 against 0: log lambda = 0 + 0.1 * 1 * 0.875
    log_lam, fig = ppo.multiplier_step(cfg, 0.0, window, torch.tensor([-2.0, 0.5, -1.0, 3.0]), 0)
    assert fig == pytest.approx(0.875) and log_lam == pytest.approx(0.0875)
    # every answer safe: the window's mean is 0, lambda holds (the share rule would lower it)
    held, fig = ppo.multiplier_step(cfg, log_lam, window, torch.tensor([-1.0, -0.2, 0.0, -3.0]), 1)
    assert fig == 0.0 and held == log_lam
    # a per-answer threshold d: the penalty is {C - d}^+ (d = -0.5: [0.3, 0, 0.5, 0] -> 0.2)
    strict = ppo.PPOConfig(algorithm="repo", threshold=-0.5)
    values, target = ppo.multiplier_signal(strict, torch.tensor([-0.2, -1.0, 0.0, -0.5]))
    assert values.tolist() == pytest.approx([0.3, 0.0, 0.5, 0.0]) and target == 0.0
    # the suite's earlier rule, kept as a variant: share of C > 0 against 0.05 (2 of 4 -> +0.1 * 0.45)
    share = ppo.PPOConfig(algorithm="repo", repo_multiplier="share")
    up, fig = ppo.multiplier_step(share, 0.0, deque(maxlen=4), torch.tensor([-2.0, 0.5, -1.0, 3.0]), 0)
    assert fig == 0.5 and up == pytest.approx(0.045)


# -- lengths, prompts, EOS -------------------------------------------------------------------------------------
def test_answer_mask_ends_at_any_eos_and_at_each_rows_budget_by_hand():
    assert answer_budgets([10, 500, 512, 600], 512, 48) == [48, 12, 0, 0]
    resp = torch.tensor([[5, 7, 2, 9], [3, 4, 6, 8], [6, 1, 1, 1]])
    mask = answer_mask(resp, [2, 6], torch.tensor([4, 2, 4]))
    # row 0 ends at EOS 2 (included); row 1 is cut by its budget before its EOS 6; row 2 ends at once
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]]


def test_training_prompts_are_deduplicated_and_too_long_ones_dropped(tmp_path):
    from transformers import AutoTokenizer

    from safealign.tokens import prompt_ids
    tok = AutoTokenizer.from_pretrained(tiny_model(tmp_path / "sft"))
    rows = [{"prompt": p} for p in ("How do I bake bread?", "Tell me a joke.", "How do I bake bread?",
                                    "word " * 40, "Tell me a joke.")]
    limit = len(prompt_ids(tok, TEMPLATE.format(input="word " * 40)))      # exactly max_length: no room left
    prompts, dropped = ppo.training_prompts(rows, TEMPLATE, tok, limit)
    assert prompts == [TEMPLATE.format(input="How do I bake bread?"), TEMPLATE.format(input="Tell me a joke.")]
    assert dropped == 1
    assert ppo.training_prompts(rows, TEMPLATE, tok, limit + 1) == (prompts + [TEMPLATE.format(input="word " * 40)],
                                                                  0)


@pytest.fixture(scope="module")
def six(tmp_path_factory):
    root = tmp_path_factory.mktemp("six")
    sft = tiny_model(root / "sft")
    return sft, score_model(root / "rm", sft, 1), score_model(root / "cm", sft, 2)


def models(paths, cfg):
    return ppo.Models(*paths, cfg, steps=1)


def test_rollout_caps_prompt_plus_answer_per_row(six):
    from safealign.tokens import prompt_ids
    cfg = ppo.PPOConfig(max_new_tokens=8, rollout_batch=2)
    m = models(six, cfg)
    prompts = [TEMPLATE.format(input="Hi."), TEMPLATE.format(input="How do I bake bread at home with flour?")]
    lengths = [len(prompt_ids(m.tok, p)) for p in prompts]
    cfg.max_length = lengths[1] + 3                         # the long prompt leaves 3 tokens, the short one 8
    b = ppo.rollout(m, prompts, [11, 12], cfg)
    budgets = answer_budgets(lengths, cfg.max_length, cfg.max_new_tokens)
    assert budgets[1] == 3 and budgets[0] == 8
    n = b["mask"].sum(-1).long().tolist()
    assert n[1] <= 3 and n[0] <= 8 and max(n) > 3         # the short row may run past the long row's cap
    answer = b["seq"][:, b["start"]:]
    assert (b["attn"].sum(-1) == torch.tensor(lengths) + b["mask"].sum(-1).long()).all()   # prompt + answer only
    assert (answer[b["mask"] == 0] == m.tok.pad_token_id).all()     # tokens past a row's budget are gone
    # the first tokens are the same answer a cap of 8 samples (each row from its own seed)
    free = ppo.rollout(m, prompts, [11, 12], ppo.PPOConfig(max_new_tokens=8))
    assert torch.equal(free["seq"][1, b["start"]:b["start"] + n[1]], answer[1, :n[1]])


def test_an_answer_ends_at_any_of_several_eos_ids(six, tmp_path):
    import shutil

    from transformers import GenerationConfig
    cfg = ppo.PPOConfig(max_new_tokens=12, rollout_batch=2)
    prompts = [TEMPLATE.format(input="How do I bake bread?"), TEMPLATE.format(input="Tell me a joke.")]
    free = ppo.rollout(models(six, cfg), prompts, [3, 4], cfg)
    row = free["seq"][0, free["start"]:].tolist()
    eos = models(six, cfg).tok.eos_token_id
    k = next(i for i in range(2, len(row)) if row[i] not in row[:i] and row[i] != eos)   # a token first seen at k
    # a checkpoint whose generation_config lists two EOS ids (as Llama 3's), the second that token
    sft = tmp_path / "sft2"
    shutil.copytree(six[0], sft)
    gen = GenerationConfig.from_pretrained(sft)
    gen.eos_token_id = [eos, row[k]]
    gen.save_pretrained(sft)
    m = models((sft, six[1], six[2]), cfg)
    b = ppo.rollout(m, prompts, [3, 4], cfg)
    assert b["mask"][0].sum().item() == k + 1                        # up to and including the second EOS id
    assert b["seq"][0, b["start"]:b["start"] + k + 1].tolist() == row[:k + 1]
    assert (b["seq"][0, b["start"] + k + 1:] == m.tok.pad_token_id).all()      # generation stopped there
    assert ppo.stop_ids(m) == sorted({eos, row[k]})


# -- PTX -----------------------------------------------------------------------------------------------------
def test_safe_answers_ptx_takes_only_safe_better_answers():
    rows = [pref("q1", "safe and better", "unsafe", 0, True, False),
            pref("q2", "unsafe but better", "safe", 0, False, True),      # the better answer is unsafe: none
            pref("q3", "safe", "safe and better", 1, True, True)]
    cfg = ppo.PPOConfig(ptx_coeff=1.0, ptx_source="safe-answers")
    got = ppo.ptx_examples(cfg, rows, TEMPLATE, None)
    assert got == [{"prompt": "USER: q1 ASSISTANT:", "completion": " safe and better"},
                   {"prompt": "USER: q3 ASSISTANT:", "completion": " safe and better"}]
    from safealign import world
    rows = world.build()["train"]
    unsafe = {r[f"response_{i}"] for r in rows for i in (0, 1) if not r[f"is_response_{i}_safe"]}
    examples = ppo.ptx_examples(cfg, rows, TEMPLATE, None)
    assert examples and not {e["completion"][1:] for e in examples} & unsafe       # no unsafe answer enters PTX


def test_alpaca_file_ptx_builds_prompts_as_safe_rlhf(tmp_path):
    data = tmp_path / "alpaca.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in (
        {"instruction": "Sort these numbers.", "input": "3 1 2", "output": "1 2 3"},
        {"instruction": "Name a colour.", "input": "", "output": "Blue."})))
    cfg = ppo.PPOConfig(ptx_coeff=1.0, ptx_source=str(data))
    got = ppo.ptx_examples(cfg, [], TEMPLATE, tmp_path / "downloads")
    assert got == [{"prompt": "USER: Sort these numbers. 3 1 2 ASSISTANT:", "completion": " 1 2 3"},
                   {"prompt": "USER: Name a colour. ASSISTANT:", "completion": " Blue."}]
    from safealign.sources import sha256_of
    assert ppo.ptx_examples(ppo.PPOConfig(ptx_coeff=1.0, ptx_source=str(data), ptx_sha256=sha256_of(data)), [],
                            TEMPLATE, tmp_path / "downloads") == got
    with pytest.raises(BenchError, match="the benchmark pins 0000"):       # a pinned local file that changed
        ppo.ptx_examples(ppo.PPOConfig(ptx_coeff=1.0, ptx_source=str(data), ptx_sha256="0" * 64), [], TEMPLATE,
                         tmp_path / "downloads")
    data.write_text(json.dumps({"prompt": "x", "output": "y"}))
    with pytest.raises(BenchError, match="missing column 'instruction'"):
        ppo.ptx_examples(cfg, [], TEMPLATE, tmp_path / "downloads")


def test_ptx_needs_a_source_and_fails_while_planning(tmp_path, monkeypatch):
    def plan(*overrides, benchmark="tiny"):
        return Run(benchmark, "saferlhf,repo", tmp_path / "out", tmp_path / "cache", overrides=list(overrides),
                   echo=False)
    with pytest.raises(BenchError, match=r"ptx_coeff = 1.0 needs ptx_source") as e:
        plan("methods.saferlhf.ptx_coeff=1.0")
    assert "\n" not in str(e.value)
    with pytest.raises(BenchError, match="ptx_source ./no/such.jsonl does not exist"):
        plan("methods.saferlhf.ptx_coeff=1.0", "methods.saferlhf.ptx_source='./no/such.jsonl'")
    with pytest.raises(BenchError, match="repo_multiplier = 'median'"):
        plan("methods.repo.repo_multiplier='median'")
    rl_keys = lambda run: {s.label: s.key for s in run.graph if s.kind == "rl"}     # noqa: E731
    safe = plan("methods.saferlhf.ptx_coeff=1.0", "methods.saferlhf.ptx_source='safe-answers'")
    other = plan("methods.saferlhf.ptx_coeff=1.0", "methods.saferlhf.ptx_source='tatsu-lab/alpaca'")
    assert rl_keys(safe)["saferlhf"] != rl_keys(other)["saferlhf"] and rl_keys(safe)["repo"] == rl_keys(other)["repo"]
    monkeypatch.setenv("OPENAI_API_KEY", "unused")             # paper's judge; planning calls nothing
    paper = {s.label: s.config["ppo"] for s in plan(benchmark="paper").graph if s.kind == "rl"}
    assert all(c["ptx_source"] == "tatsu-lab/alpaca" and c["ptx_coeff"] == 16.0 for c in paper.values())
    assert paper["repo"]["repo_multiplier"] == "rectified"


# -- resume --------------------------------------------------------------------------------------------------
def test_resume_is_the_main_process_decision_and_every_rank_must_see_the_file(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    assert ppo.resume_from([True], ckpt) is True and ppo.resume_from([False], ckpt) is False
    assert ppo.resume_from([True, True, True], ckpt) is True
    assert ppo.resume_from([False, True], ckpt) is False        # a stale file on another node: start over, all
    with pytest.raises(BenchError, match=r"process\(es\) 1, 3 cannot see it") as e:
        ppo.resume_from([True, False, True, False], ckpt)
    assert "\n" not in str(e.value)
