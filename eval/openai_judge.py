"""The GPT-4 judge, through the `openai` client: any OpenAI-compatible server (OPENAI_BASE_URL) answers.

The request follows the structure of line/sacpo's GPT-4 evaluation: a system prompt per kind (helpfulness,
harmlessness), a user prompt holding the rubric, the score anchors, the question and each answer between
start/end markers, and a reply whose first line is "scoreA scoreB". The wording lives in data files
(judge_configs/), so a user can swap in the paper's exact prompt. Unless `explain = true`, the judge is asked
for the score line only and `max_tokens` caps the reply just above it (the official code asks for 8).

Every call is cached on disk under a hash of (model, messages, parameters, repetition, attempt), with the
token usage the server reported, so a rerun or a resumed run never pays for an answer twice, and what a run
folder's judgments cost can be summed again at any time (`Usage.record`). Transport failures (429, 5xx,
timeouts) are retried with exponential backoff; an answer whose first line lacks two scores is asked again (a
new attempt) and, after `parse_retries`, recorded as a failure: never silently a tie.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import string
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safealign import BenchError
from safealign.eval.judges import Comparison, Judge, Verdict
from safealign.stages import digest, write_atomic

_NUM = r"(-?\d+(?:\.\d+)?)"
_NO_THIRD = r"(?!\s*[,/;]?\s*-?\d)"           # "7 4 5" is ambiguous, not (7, 4)
_FORMS = (
    # "7/10, 4/10"
    re.compile(rf"^(?:scores?\s*[:=]?\s*)?{_NUM}\s*/\s*10\s*[,;]?\s*{_NUM}\s*/\s*10\b", re.I),
    # "A: 7, B: 4", "Assistant A: 7 Assistant B: 4"
    re.compile(rf"^(?:scores?\s*[:=]?\s*)?(?:assistant\s*|answer\s*)?a\s*[:=]\s*{_NUM}\s*[,;/]?\s*"
               rf"(?:assistant\s*|answer\s*)?b\s*[:=]\s*{_NUM}{_NO_THIRD}", re.I),
    # "7 4", "7, 4", "7/4", "Scores: 7 4"
    re.compile(rf"^(?:scores?\s*[:=]?\s*)?{_NUM}\s*(?:[,/;]|\s)\s*{_NUM}{_NO_THIRD}", re.I),
)
SCORE_LINE_TOKENS = 16     # max_tokens when only the score line is asked for ("7 4" is 2-3 tokens)
EXPLANATION_TOKENS = 512   # max_tokens when an explanation follows it


def parse_scores(content: str) -> tuple[float, float] | None:
    """The two scores on the first non-empty line: "7 4" as asked, and the common variants "7, 4", "7/4",
    "**7 4**", "[[7, 4]]", "Scores: 7 4", "7/10 4/10", "A: 7, B: 4". None when there are not exactly two,
    or a score lies outside 0-10."""
    first = next((line for line in content.splitlines() if line.strip()), "")
    line = re.sub(r"[*`\"'\[\](){}]", " ", first).strip()     # markdown, quotes and brackets around the scores
    for form in _FORMS:
        m = form.match(line)
        if m:
            a, b = float(m.group(1)), float(m.group(2))
            return (a, b) if 0 <= a <= 10 and 0 <= b <= 10 else None
    return None


@dataclass
class OpenAIJudgeConfig:
    kind: str = "openai"
    model: str = "gpt-4-0125-preview"
    temperature: float = 0.7
    explain: bool = False       # ask for an explanation after the score line (pays for ~30-60x more output)
    max_tokens: int = 0         # 0: SCORE_LINE_TOKENS, or EXPLANATION_TOKENS when explain is true
    repetitions: int = 3
    concurrency: int = 8
    max_retries: int = 6
    backoff_seconds: float = 2.0
    timeout: float = 120.0
    parse_retries: int = 2
    mode: str = "online"
    batch_poll_seconds: float = 30.0
    failed_as_tie: bool = False
    price_input_per_1m: float = 10.0
    price_output_per_1m: float = 30.0
    system: dict | str = field(default_factory=dict)      # kind -> system prompt (file name, then its text)
    templates: dict = field(default_factory=dict)          # kind -> user prompt template (file name, then text)
    reply: dict = field(default_factory=dict)              # {scores_only, explained}: fills {reply_format}
    base_url: str = ""          # an OpenAI-compatible server (a `vllm serve`); "" = OPENAI_BASE_URL or OpenAI's
    api_key_env: str = "OPENAI_API_KEY"   # the variable holding the key; "" for a server that needs none
    extra_body: dict = field(default_factory=dict)        # request fields a server adds (vLLM: structured_outputs)

    def reply_format(self) -> str:
        return self.reply.get("explained" if self.explain else "scores_only", "")


def cost(cfg: OpenAIJudgeConfig, prompt_tokens: int, completion_tokens: int) -> float:
    """Estimated USD at the config's prices (online prices: the Batch API bills less)."""
    return (prompt_tokens * cfg.price_input_per_1m + completion_tokens * cfg.price_output_per_1m) / 1e6


@dataclass
class Usage:
    """What this judge object sent and was paid for in this run (answers served by the cache cost nothing)."""
    sent: int = 0
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def cost(self, cfg: OpenAIJudgeConfig) -> float:
        return cost(cfg, self.prompt_tokens, self.completion_tokens)

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in ("sent", "cached", "failed", "prompt_tokens", "completion_tokens")}

    def add(self, counts: dict) -> None:
        """Counters another process saved (a judging stage run by a Ray worker)."""
        for f, v in counts.items():
            if f in self.as_dict():
                setattr(self, f, getattr(self, f) + int(v))

    def line(self, cfg: OpenAIJudgeConfig) -> str:
        return (f"judge {cfg.model}: {self.sent} requests sent, {self.cached} answered from cache, {self.failed} failed; "
                f"{self.prompt_tokens} input + {self.completion_tokens} output tokens, est. ${self.cost(cfg):.2f}")

    def record(self, judgments: dict, gens: dict) -> dict:
        """judge_usage.json: this run's figures, and the total of every call behind `judgments` (as run.py
        keeps them: {(model, baseline): rows}), read back from the call cache, whichever run paid for it."""
        judge = getattr(self, "owner", None)
        if judge is None:
            return asdict(self)
        cfg = judge.cfg
        total = judge.spent(comparisons_of(judgments, gens))
        return {
            "model": cfg.model,
            "prices_usd_per_1m_tokens": {"input": cfg.price_input_per_1m, "output": cfg.price_output_per_1m},
            "this_run": {"requests_sent": self.sent, "answered_from_cache": self.cached, "failed": self.failed,
                         "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                         "est_cost_usd": round(self.cost(cfg), 6)},
            "total_for_these_judgments": {**total, "est_cost_usd": round(
                cost(cfg, total["prompt_tokens"], total["completion_tokens"]), 6)},
        }


class OpenAIJudge(Judge):
    """A judge described by a config file (model, temperature, prompt templates); see judge_configs/gpt4.toml."""

    def __init__(self, cfg: OpenAIJudgeConfig, cache_dir: Path | None = None, log=print):
        if cfg.api_key_env and not os.environ.get(cfg.api_key_env):
            raise BenchError(f"judge model '{cfg.model}' needs an API key: export {cfg.api_key_env} (and "
                             "OPENAI_BASE_URL for another OpenAI-compatible server), or choose judge 'oracle'")
        if cfg.mode not in ("online", "batch"):
            raise BenchError(f"judge mode '{cfg.mode}' is unknown: use 'online' or 'batch'")
        self.cfg, self.log = cfg, log
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.usage = Usage()
        self.usage.owner = self      # not a dataclass field: Usage.record reads the cache through it
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._pool: ThreadPoolExecutor | None = None       # made on first use, kept until close()
        import openai
        # Retries are ours (counted, logged, honouring retry-after), so the client's own are off.
        key = os.environ[cfg.api_key_env] if cfg.api_key_env else "none"    # a local server ignores it
        self.client = openai.OpenAI(max_retries=0, timeout=cfg.timeout, api_key=key, base_url=cfg.base_url or None)

    @property
    def failed_as_tie(self) -> bool:
        return self.cfg.failed_as_tie

    @property
    def repetitions(self) -> int:
        return self.cfg.repetitions

    def record(self) -> dict:
        return config_record(self.cfg)

    def estimate_cost(self, comparisons: int, answer_tokens: int) -> float:
        """An upper bound: each comparison one request, its prompt the longest template plus two full answers
        (a token taken as 4 characters), its reply max_tokens long."""
        longest = max((len(t) for t in self.cfg.templates.values()), default=0) + \
            max((len(t) for t in (self.cfg.system.values() if isinstance(self.cfg.system, dict) else [self.cfg.system])),
                default=0)
        prompt = longest // 4 + 2 * answer_tokens
        return comparisons * cost(self.cfg, prompt, self.cfg.max_tokens)

    # -- requests and their cache ----------------------------------------------------------------------------
    def messages(self, c: Comparison) -> list[dict]:
        """The kind's system prompt, then its user prompt with the question and both answers filled in."""
        if c.kind not in self.cfg.templates:
            raise BenchError(f"judge config has no template for '{c.kind}': add it under [templates]")
        user = fill(self.cfg.templates[c.kind], c.prompt, c.response_a, c.response_b, self.cfg.reply_format())
        system = self.cfg.system.get(c.kind, "")
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]

    def request(self, c: Comparison, attempt: int) -> tuple[str, dict]:
        body = {"model": self.cfg.model, "messages": self.messages(c), "temperature": self.cfg.temperature,
                "max_tokens": self.cfg.max_tokens, **({"extra_body": self.cfg.extra_body} if self.cfg.extra_body else {})}
        # The repetition and attempt are part of the key: three rounds at temperature 0.7 are three calls; so
        # is a run seed other than 0, so that each seed's judgments are drawn afresh (seed 0 keeps the old keys).
        seed = getattr(c, "seed", 0)
        return digest({"body": body, "repetition": c.repetition, "attempt": attempt,
                       **({"seed": seed} if seed else {})}), body

    def _cache_path(self, key: str) -> Path | None:
        return self.cache_dir / key[:2] / f"{key}.json" if self.cache_dir else None

    def cached(self, key: str) -> dict | None:
        path = self._cache_path(key)
        if path and path.exists():
            return json.loads(path.read_text())
        return None

    def store(self, key: str, answer: dict) -> None:
        path = self._cache_path(key)
        if path:
            write_atomic(path, json.dumps(answer))

    # -- online mode ------------------------------------------------------------------------------------------
    def call(self, key: str, body: dict) -> dict:
        """One answered request {content, usage} or {error}; from the cache when it was answered before."""
        with self._lock:            # one request per key at a time: two threads asking the same pays once
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            return self._call(key, body)

    def _call(self, key: str, body: dict) -> dict:
        hit = self.cached(key)
        if hit is not None:
            with self._lock:
                self.usage.cached += 1
            return hit
        import openai
        wait = self.cfg.backoff_seconds
        for attempt in range(self.cfg.max_retries + 1):
            try:
                with self._lock:
                    self.usage.sent += 1
                resp = self.client.chat.completions.create(**body)
                answer = {"content": resp.choices[0].message.content or "",
                          "usage": resp.usage.model_dump() if resp.usage else {}}
                self.store(key, answer)
                self.count_tokens(answer)          # only answers paid for in this run
                return answer
            except (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                    openai.APIConnectionError) as e:
                if attempt == self.cfg.max_retries:
                    return {"error": f"{type(e).__name__} after {attempt + 1} tries"}
                time.sleep(_retry_after(e, wait))
                wait *= 2
            except openai.APIStatusError as e:       # retrying will not help
                if e.status_code in (401, 403, 404):
                    raise BenchError(f"the judge server refused '{self.cfg.model}' with {e.status_code} "
                                     f"({type(e).__name__}): check OPENAI_API_KEY, OPENAI_BASE_URL and the model "
                                     "name") from None
                return {"error": f"{type(e).__name__}: {e.status_code}", "final": True}
        return {"error": "unreachable"}

    def verdict(self, c: Comparison, answer_for) -> Verdict:
        """Ask until the first line holds two scores, at most 1 + parse_retries times."""
        raw = ""
        for attempt in range(self.cfg.parse_retries + 1):
            key, body = self.request(c, attempt)
            answer = answer_for(key, body)
            if "error" in answer:
                with self._lock:
                    self.usage.failed += 1
                return Verdict(None, None, False, answer["error"], retryable=not answer.get("final"))
            raw = answer["content"]
            scores = parse_scores(raw)
            if scores:
                return Verdict(scores[0], scores[1], True, raw)
        with self._lock:
            self.usage.failed += 1
        return Verdict(None, None, False, raw)

    def spent(self, comparisons: list[Comparison]) -> dict:
        """Requests and tokens behind these comparisons' answers, from the cache: for each one every attempt up
        to the one that parsed, as `verdict` asks them; a request shared by several comparisons (two orders of
        identical answers) counts once. A comparison with no cached answer (a call that failed, or a cache
        cleared since) counts in `judgments_without_cached_answer` and adds nothing."""
        calls: dict[str, dict] = {}
        without = 0
        for c in comparisons:
            found = False
            for attempt in range(self.cfg.parse_retries + 1):
                key, _ = self.request(c, attempt)
                answer = self.cached(key)
                if answer is None:
                    break
                found = True
                calls[key] = answer.get("usage") or {}
                if parse_scores(answer.get("content", "")):
                    break
            without += not found
        return {"judgments": len(comparisons), "requests": len(calls),
                "prompt_tokens": sum(int(u.get("prompt_tokens", 0)) for u in calls.values()),
                "completion_tokens": sum(int(u.get("completion_tokens", 0)) for u in calls.values()),
                "judgments_without_cached_answer": without}

    def count_tokens(self, answer: dict) -> None:
        usage = answer.get("usage") or {}
        with self._lock:
            self.usage.prompt_tokens += int(usage.get("prompt_tokens", 0))
            self.usage.completion_tokens += int(usage.get("completion_tokens", 0))

    def judge(self, items: list[Comparison]) -> list[Verdict]:
        out: list = [None] * len(items)
        for i, v in self.stream(items):
            out[i] = v
        return out

    def stream(self, items: list[Comparison], batch_size: int = 32) -> Iterator[tuple[int, Verdict]]:
        """(index, verdict) as each one is decided. Online, the items flow through one pool of `concurrency`
        threads: a thread that finishes starts the next request at once, so no chunk waits for its slowest
        request, and never more than `concurrency` requests are in flight (batch_size plays no part). In batch
        mode all items are one Batch API job, not one job per chunk of batch_size."""
        if self.cfg.mode == "batch":
            from safealign.eval.openai_batch import judge_batch
            yield from enumerate(judge_batch(self, items))
            return
        pool, todo = self._executor(), iter(enumerate(items))
        pending: dict = {}
        try:
            while True:
                # A window of twice the cap: a thread that finishes finds the next item already queued, and
                # each wait() looks at a few futures, not at every item of a long list.
                for i, c in itertools.islice(todo, 2 * self.cfg.concurrency - len(pending)):
                    pending[pool.submit(self.verdict, c, self.call)] = i
                if not pending:
                    return
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    yield pending.pop(fut), fut.result()
        finally:
            # Future.cancel() stops a request that has not started (a caller gave up, or a 401 was raised);
            # those already on the wire finish and land in the call cache, so nothing paid is lost.
            for fut in pending:
                fut.cancel()

    def _executor(self) -> ThreadPoolExecutor:
        """One pool for the judge's life, shared by concurrent callers: the cap is per judge, and threads are
        not started anew for every call."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.cfg.concurrency, thread_name_prefix="judge")
            return self._pool

    def close(self) -> None:
        self.log(self.usage.line(self.cfg))
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _retry_after(error, default: float) -> float:
    """A server's retry-after header (seconds) when it sends one, else our own backoff."""
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return min(float(value), 300.0) if value is not None else default
    except ValueError:
        return default


def fill(template: str, question: str, answer_a: str, answer_b: str, reply_format: str = "") -> str:
    """A user prompt. {answer1}/{answer2} are accepted beside {answer_a}/{answer_b}, so the paper's prompt text
    can be pasted in as it is; {reply_format} is the config's reply instruction (scores only, or explained)."""
    return template.format(question=question, answer_a=answer_a, answer_b=answer_b, answer1=answer_a,
                           answer2=answer_b, reply_format=reply_format)


def load_config(path: Path, overrides: dict | None = None) -> OpenAIJudgeConfig:
    """A judge config file; the templates and system prompts are files named relative to it. `system` is a
    table kind -> file (one file name for every kind is accepted too)."""
    import tomllib
    from safealign.methods.training import from_dict
    data = {**tomllib.loads(path.read_text()), **(overrides or {})}
    cfg = from_dict(OpenAIJudgeConfig, data, f"judge {path.name}")
    base = path.parent
    cfg.templates = {kind: _read(base, name) for kind, name in cfg.templates.items()}
    system = cfg.system if isinstance(cfg.system, dict) else {kind: cfg.system for kind in cfg.templates}
    cfg.system = {kind: _read(base, name).strip() for kind, name in system.items() if name}
    if cfg.max_tokens <= 0:
        cfg.max_tokens = EXPLANATION_TOKENS if cfg.explain else SCORE_LINE_TOKENS
    for kind, text in cfg.templates.items():
        _check_template(path, kind, text, cfg)
    return cfg


def _check_template(path: Path, kind: str, text: str, cfg: OpenAIJudgeConfig) -> None:
    """A template that cannot be filled, or leaves out the question or an answer, fails at load time."""
    try:
        fill(text, "", "", "", "")
    except (KeyError, IndexError, ValueError) as e:
        raise BenchError(f"judge template for '{kind}' in {path.name} cannot be filled ({type(e).__name__}: {e}): "
                         "use only {question}, {answer_a}, {answer_b} (or {answer1}, {answer2}) and "
                         "{reply_format}; write other braces as {{ and }}") from None
    fields = {f for _, f, _, _ in string.Formatter().parse(text) if f}
    if "question" not in fields or not ({"answer_a", "answer_b"} <= fields or {"answer1", "answer2"} <= fields):
        raise BenchError(f"judge template for '{kind}' in {path.name} must hold {{question}} and both answers "
                         "({answer_a} and {answer_b}, or {answer1} and {answer2})")
    if "reply_format" in fields and not cfg.reply_format():
        which = "explained" if cfg.explain else "scores_only"
        raise BenchError(f"judge template for '{kind}' in {path.name} uses {{reply_format}} but the config has no "
                         f"[reply] {which} text")


def _read(base: Path, name: str) -> str:
    path = base / name
    if not path.exists():
        raise BenchError(f"judge template {path} does not exist: fix the file name in the judge config")
    return path.read_text()


def config_record(cfg: OpenAIJudgeConfig) -> dict:
    """What a judging stage is keyed on: everything that changes the answers (not concurrency or prices)."""
    keep = ("model", "temperature", "max_tokens", "repetitions", "parse_retries", "system", "templates",
            "explain", "reply", "extra_body")
    return {k: v for k, v in asdict(cfg).items() if k in keep}


def comparisons_of(judgments: dict, gens: dict) -> list[Comparison]:
    """The comparisons (question and both answers, in the order shown to the judge) behind judgment rows, rebuilt
    from the generations as the judging stage built them; rows that match no generation are left out."""
    from safealign.eval.judging import _comparison, judgment_id, plan
    try:
        from safealign.pipeline import PROMPT_SETS_BY_KIND as kinds
    except ImportError:
        kinds = {"helpfulness": "helpful", "harmlessness": "redteam"}
    out = []
    for (model, baseline), rows in judgments.items():
        if model not in gens or baseline not in gens:
            continue
        kind_sets = {k: s for k, s in kinds.items() if s in gens[model] and s in gens[baseline]}
        by_seed: dict = {}
        for r in rows:                   # rows of a multi-seed run carry their seed; so do their generations
            by_seed.setdefault(r.get("seed"), []).append(r)
        for seed, group in by_seed.items():
            mine = {m: {s: [g for g in gens[m][s] if seed is None or g.get("seed", seed) == seed] for s in gens[m]}
                    for m in (model, baseline)}
            repetitions = 1 + max(int(r["repetition"]) for r in group)
            try:
                todo = {judgment_id(r): r if seed is None else {**r, "seed": seed}
                        for r in plan(model, baseline, mine, kind_sets, repetitions)}
            except KeyError:             # generations that do not pair up: these judgments cannot be priced
                continue
            out += [_comparison(todo[judgment_id(r)]) for r in group if judgment_id(r) in todo]
    return out
