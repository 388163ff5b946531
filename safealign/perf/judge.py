"""Judge throughput: the GPT-4 judge (judge_configs/gpt4.toml, the real `openai` client) against the loopback
OpenAI server of safealign/eval/fake_openai.py answering each chat request after 200 ms, as a remote model
does. The comparisons go through eval/judging.py run_judgments, the code path a run's judging stage takes,
sequentially (concurrency 1), at the config's default concurrency and at 32; the figure is the throughput at 32
over the sequential one, with the server's count of requests in flight checked against the cap."""
from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

DELAY_SECONDS = 0.2
GOAL = 20.0
WIDE = 32


@contextmanager
def _pointed_at(url: str):
    """OPENAI_BASE_URL at the local server and a dummy key (the client insists on one), put back afterwards so
    a user's real settings survive `bench perf`."""
    saved = {k: os.environ.get(k) for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    os.environ.update(OPENAI_API_KEY="sk-local-dummy", OPENAI_BASE_URL=url)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _todo(n: int, tag: str) -> list[dict]:
    """n judgments (n/2 prompts x both orders) of distinct answers, so that no request repeats another."""
    from safealign.eval.judging import plan
    gens = {m: {"helpful": [{"prompt_id": f"{tag}{i}", "prompt": f"question {tag} {i}?",
                             "response": f"{m} says {'more ' * (i % 7)}about {i}"} for i in range((n + 1) // 2)]}
            for m in ("model", "sft")}
    return plan("model", "sft", gens, {"helpfulness": "helpful"}, 1)[:n]


def _rate(fake, root: Path, n: int, concurrency: int | None) -> tuple[float, int]:
    """(comparisons per second, most requests the server had in flight) judging n fresh comparisons."""
    from safealign.eval.judges import make_judge
    from safealign.eval.judging import run_judgments
    settings = {"repetitions": 1, **({"concurrency": concurrency} if concurrency else {})}
    tag = f"c{concurrency or 'default'}-"
    judge = make_judge("gpt4", settings, root / f"calls-{tag}", log=lambda m: None)
    todo = _todo(n, tag)
    fake.max_in_flight = 0
    start = time.perf_counter()
    rows = run_judgments(judge, todo, root / f"{tag}judgments.jsonl", desc=f"judge at concurrency "
                         f"{judge.cfg.concurrency}")
    seconds = time.perf_counter() - start
    judge.close()
    if not all(r["ok"] for r in rows):         # a rate of failures would mean nothing
        raise RuntimeError(f"judge throughput: {sum(not r['ok'] for r in rows)} of {n} judgments failed")
    return n / seconds, fake.max_in_flight


def throughput(quick: bool) -> dict:
    from safealign.eval.fake_openai import FakeOpenAI
    n = 64 if quick else 256
    fake = FakeOpenAI()
    fake.delay_seconds = DELAY_SECONDS
    try:
        with _pointed_at(fake.url), tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            sequential, _ = _rate(fake, root, n, 1)
            default, _ = _rate(fake, root, n, None)
            wide, in_flight = _rate(fake, root, n, WIDE)
    finally:
        fake.close()
    value = wide / sequential
    return {"figure": f"judge throughput at {WIDE}", "value": value, "unit": "x sequential", "goal": f">= {GOAL:g}x",
            "ok": value >= GOAL and in_flight <= WIDE,
            "detail": f"default (8): {default / sequential:.1f} x; {WIDE}: {value:.1f} x; max in flight {in_flight}; "
                      f"sequential {sequential:.2f}/s ({n} comparisons, {DELAY_SECONDS * 1000:g} ms per request)"}
