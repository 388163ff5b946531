"""The GPT-4 judge, through the `openai` client: any OpenAI-compatible server (OPENAI_BASE_URL) answers.

Every call is cached on disk under a hash of (model, messages, parameters, repetition, attempt), so a rerun
or a resumed run never pays for an answer twice. Transport failures (429, 5xx, timeouts) are retried with
exponential backoff; an answer whose first line lacks two scores is asked again (a new attempt) and, after
`parse_retries`, recorded as a failure: never silently a tie.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safealign import BenchError
from safealign.eval.judges import Comparison, Verdict
from safealign.stages import digest, write_atomic

SCORES = re.compile(r"^\s*\**\s*(?:score[s]?\s*[:=]?\s*)?(-?\d+(?:\.\d+)?)\s*[,/ ]\s*(-?\d+(?:\.\d+)?)\b", re.I)


def parse_scores(content: str) -> tuple[float, float] | None:
    """The two scores on the first non-empty line ("7 4", "7, 4", "7/4"); None when absent or outside 0-10."""
    first = next((line for line in content.splitlines() if line.strip()), "")
    m = SCORES.match(first)
    if not m:
        return None
    a, b = float(m.group(1)), float(m.group(2))
    return (a, b) if 0 <= a <= 10 and 0 <= b <= 10 else None


@dataclass
class OpenAIJudgeConfig:
    kind: str = "openai"
    model: str = "gpt-4-0125-preview"
    temperature: float = 0.7
    max_tokens: int = 512
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
    system: str = ""
    templates: dict = field(default_factory=dict)


@dataclass
class Usage:
    sent: int = 0
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def cost(self, cfg: OpenAIJudgeConfig) -> float:
        return (self.prompt_tokens * cfg.price_input_per_1m + self.completion_tokens * cfg.price_output_per_1m) / 1e6

    def line(self, cfg: OpenAIJudgeConfig) -> str:
        return (f"judge {cfg.model}: {self.sent} requests sent, {self.cached} answered from cache, {self.failed} failed; "
                f"{self.prompt_tokens} input + {self.completion_tokens} output tokens, est. ${self.cost(cfg):.2f}")


class OpenAIJudge:
    """A judge described by a config file (model, temperature, prompt templates); see judge_configs/gpt4.toml."""

    def __init__(self, cfg: OpenAIJudgeConfig, cache_dir: Path | None = None, log=print):
        if not os.environ.get("OPENAI_API_KEY"):
            raise BenchError(f"judge model '{cfg.model}' needs an API key: export OPENAI_API_KEY (and OPENAI_BASE_URL "
                             "for another OpenAI-compatible server), or choose judge 'oracle'")
        if cfg.mode not in ("online", "batch"):
            raise BenchError(f"judge mode '{cfg.mode}' is unknown: use 'online' or 'batch'")
        self.cfg, self.log = cfg, log
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.usage = Usage()
        self._lock = threading.Lock()
        import openai
        # Retries are ours (counted, logged, honouring retry-after), so the client's own are off.
        self.client = openai.OpenAI(max_retries=0, timeout=cfg.timeout)

    @property
    def failed_as_tie(self) -> bool:
        return self.cfg.failed_as_tie

    # -- requests and their cache ----------------------------------------------------------------------------
    def messages(self, c: Comparison) -> list[dict]:
        if c.kind not in self.cfg.templates:
            raise BenchError(f"judge config has no template for '{c.kind}': add it under [templates]")
        user = self.cfg.templates[c.kind].format(question=c.prompt, answer_a=c.response_a, answer_b=c.response_b)
        return ([{"role": "system", "content": self.cfg.system}] if self.cfg.system else []) + \
            [{"role": "user", "content": user}]

    def request(self, c: Comparison, attempt: int) -> tuple[str, dict]:
        body = {"model": self.cfg.model, "messages": self.messages(c), "temperature": self.cfg.temperature,
                "max_tokens": self.cfg.max_tokens}
        # The repetition and attempt are part of the key: three rounds at temperature 0.7 are three calls.
        return digest({"body": body, "repetition": c.repetition, "attempt": attempt}), body

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

    def count_tokens(self, answer: dict) -> None:
        usage = answer.get("usage") or {}
        with self._lock:
            self.usage.prompt_tokens += int(usage.get("prompt_tokens", 0))
            self.usage.completion_tokens += int(usage.get("completion_tokens", 0))

    def judge(self, items: list[Comparison]) -> list[Verdict]:
        if self.cfg.mode == "batch":
            from safealign.eval.openai_batch import judge_batch
            return judge_batch(self, items)
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            return list(pool.map(lambda c: self.verdict(c, self.call), items))

    def close(self) -> None:
        self.log(self.usage.line(self.cfg))


def _retry_after(error, default: float) -> float:
    """A server's retry-after header (seconds) when it sends one, else our own backoff."""
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return min(float(value), 300.0) if value is not None else default
    except ValueError:
        return default


def load_config(path: Path, overrides: dict | None = None) -> OpenAIJudgeConfig:
    """A judge config file; templates and the system prompt are files named relative to it."""
    import tomllib
    from safealign.methods.training import from_dict
    data = {**tomllib.loads(path.read_text()), **(overrides or {})}
    cfg = from_dict(OpenAIJudgeConfig, data, f"judge {path.name}")
    base = path.parent
    cfg.templates = {kind: _read(base, name) for kind, name in cfg.templates.items()}
    cfg.system = _read(base, cfg.system).strip() if cfg.system else ""
    return cfg


def _read(base: Path, name: str) -> str:
    path = base / name
    if not path.exists():
        raise BenchError(f"judge template {path} does not exist: fix the file name in the judge config")
    return path.read_text()


def config_record(cfg: OpenAIJudgeConfig) -> dict:
    """What a judging stage is keyed on: everything that changes the answers (not concurrency or prices)."""
    keep = ("model", "temperature", "max_tokens", "repetitions", "parse_retries", "system", "templates")
    return {k: v for k, v in asdict(cfg).items() if k in keep}
