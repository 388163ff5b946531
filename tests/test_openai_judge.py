"""The GPT-4 judge with the real `openai` client against a real HTTP server on loopback."""
import os
import subprocess
import sys
import time

import pytest

from openai_server import FakeOpenAI, default_answer
from safealign import BenchError
from safealign.eval.judges import Comparison, make_judge
from safealign.eval.openai_judge import parse_scores
from safealign.eval.winrate import win_rate

KEY = "sk-test-DO-NOT-LEAK-1234"


@pytest.fixture
def server(monkeypatch):
    fake = FakeOpenAI()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    yield fake
    fake.close()


def comparisons(n=3):
    return [Comparison(f"p{i}", "helpfulness", f"question {i}?", "short", "a much longer answer " * (i + 1))
            for i in range(n)]


def judge(tmp_path, **settings):
    return make_judge("gpt4", {"backoff_seconds": 0.01, **settings}, tmp_path / "calls", log=lambda m: None)


def expected(c):
    body = {"messages": [{"content": judge_messages(c)}]}
    return tuple(float(x) for x in default_answer(body).split("\n")[0].split())


def judge_messages(c):
    from importlib import resources
    text = resources.files("safealign.eval").joinpath("judge_configs/helpfulness.txt").read_text()
    return text.format(question=c.prompt, answer_a=c.response_a, answer_b=c.response_b)


def test_parse_scores():
    assert parse_scores("7 4\nwhy") == (7.0, 4.0)
    assert parse_scores("\n 8.5, 3\n") == (8.5, 3.0)
    assert parse_scores("Scores: 6/9") == (6.0, 9.0)
    assert parse_scores("I like A.\n7 4") is None            # the scores must be on the first line
    assert parse_scores("12 4") is None


def test_normal_answers_and_cache(server, tmp_path):
    items = comparisons()
    verdicts = judge(tmp_path).judge(items)
    assert [(v.score_a, v.score_b) for v in verdicts] == [expected(c) for c in items]
    assert server.chat_calls() == 3
    again = judge(tmp_path)
    assert [v.score_a for v in again.judge(items)] == [v.score_a for v in verdicts]
    assert server.chat_calls() == 3 and again.usage.sent == 0 and again.usage.cached == 3
    assert again.usage.prompt_tokens == 0 and again.usage.cost(again.cfg) == 0.0    # nothing paid this time


def test_repetitions_are_distinct_calls(server, tmp_path):
    items = [Comparison("p", "helpfulness", "q?", "a", "b", repetition=r) for r in range(3)]
    judge(tmp_path).judge(items)
    assert server.chat_calls() == 3


def test_rate_limit_then_success(server, tmp_path):
    server.script = ["429", "500"]
    j = judge(tmp_path)
    [v] = j.judge(comparisons(1))
    assert v.ok and server.chat_calls() == 3 and j.usage.sent == 3


def test_timeout_is_retried_then_reported(server, tmp_path):
    server.stall_seconds = 1.5
    server.script = ["timeout"]
    [v] = judge(tmp_path, timeout=0.5).judge(comparisons(1))
    assert v.ok and server.chat_calls() == 2
    server.script = ["timeout", "timeout"]
    [v] = judge(tmp_path / "b", timeout=0.5, max_retries=1).judge(comparisons(1))
    assert not v.ok and "APITimeoutError" in v.raw


def test_malformed_answer_is_asked_again_then_a_failure_not_a_tie(server, tmp_path):
    server.script = ["malformed"]
    [v] = judge(tmp_path).judge(comparisons(1))
    assert v.ok and server.chat_calls() == 2
    server.script = ["malformed"] * 3
    j = judge(tmp_path / "b", parse_retries=2)
    [v] = j.judge(comparisons(1))
    assert not v.ok and v.score_a is None and j.usage.failed == 1 and server.chat_calls() == 5
    rows = [{"repetition": 0, "score_model": 9, "score_baseline": 2},
            {"repetition": 0, "score_model": v.score_a, "score_baseline": v.score_b, "ok": v.ok}]
    assert win_rate(rows)["mean"] == 1.0 and win_rate(rows)["failures"] == 1


def test_missing_api_key_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(BenchError, match="OPENAI_API_KEY"):
        make_judge("gpt4")
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    r = subprocess.run([sys.executable, "-m", "safealign.cli", "run", "--set", "judge.name=gpt4", "--cache",
                        str(tmp_path / "c"), "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "OPENAI_API_KEY" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "c").exists()                       # failed before any stage ran


def test_batch_mode_and_resume(server, tmp_path, monkeypatch):
    items = comparisons(4)
    server.batch_polls_before_done = 2
    calls = []
    real_sleep = time.sleep

    def interrupted_sleep(seconds):
        calls.append(seconds)
        raise KeyboardInterrupt                                # the run is killed while the batch is in flight

    monkeypatch.setattr(time, "sleep", interrupted_sleep)
    with pytest.raises(KeyboardInterrupt):
        judge(tmp_path, mode="batch", batch_poll_seconds=0.01).judge(items)
    monkeypatch.setattr(time, "sleep", real_sleep)
    assert sum(r == ("POST", "/v1/batches") for r in server.requests) == 1
    verdicts = judge(tmp_path, mode="batch", batch_poll_seconds=0.01).judge(items)
    assert sum(r == ("POST", "/v1/batches") for r in server.requests) == 1     # resumed, not resubmitted
    assert [(v.score_a, v.score_b) for v in verdicts] == [expected(c) for c in items]
    assert server.chat_calls() == 0
    n = len(server.requests)
    judge(tmp_path, mode="batch").judge(items)
    assert len(server.requests) == n                           # all answered from the cache


def test_a_run_with_the_gpt4_judge_pays_once_and_never_writes_the_key(server, tmp_path):
    cmd = [sys.executable, "-m", "safealign.cli", "run", "--methods", "sft,dpo-h", "--limit", "6", "--cache",
           str(tmp_path / "cache"), "--set", "judge.name=gpt4", "--set", "judge.repetitions=2"]
    r = subprocess.run(cmd + ["--out", str(tmp_path / "a")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    # 2 prompt sets x 6 prompts x 2 orders x 2 rounds = 48 judgments; when the two answers to a prompt are the
    # same, both orders are one request, and whichever comes second may be served by the cache
    import re
    sent, cached = map(int, re.search(r"(\d+) requests sent, (\d+) answered from cache",
                                      (tmp_path / "a" / "run.log").read_text()).groups())
    assert sent + cached == 48 and server.chat_calls() == sent
    r = subprocess.run(cmd + ["--out", str(tmp_path / "b")], capture_output=True, text=True)
    assert r.returncode == 0 and server.chat_calls() == sent
    for path in list(tmp_path.rglob("*")):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in r.stdout + r.stderr


def test_transport_failures_leave_the_stage_unfinished_and_a_rerun_asks_only_for_them(server, tmp_path):
    from safealign.eval.judging import plan, run_judgments
    gens = {m: {"helpful": [{"prompt_id": f"p{i}", "prompt": f"q{i}?", "response": f"{m} answer {i}"}
                            for i in range(3)]} for m in ("x", "sft")}
    todo = plan("x", "sft", gens, {"helpfulness": "helpful"}, 1)          # 3 prompts x 2 orders = 6 calls
    server.script = ["500", "500"]
    with pytest.raises(BenchError, match="2 judge calls failed"):
        run_judgments(judge(tmp_path, max_retries=0), todo, tmp_path / "j.jsonl")
    assert len((tmp_path / "j.jsonl").read_text().splitlines()) == 4 and server.chat_calls() == 6
    rows = run_judgments(judge(tmp_path, max_retries=0), todo, tmp_path / "j.jsonl")
    assert len(rows) == 6 and all(r["ok"] for r in rows) and server.chat_calls() == 8


def test_a_refused_key_stops_the_run_with_one_line_that_does_not_echo_it(server, tmp_path):
    server.script = ["401"]
    with pytest.raises(BenchError, match="refused.*401.*OPENAI_API_KEY") as e:
        judge(tmp_path).judge(comparisons(1))
    assert KEY not in str(e.value) and "\n" not in str(e.value)
