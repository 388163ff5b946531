"""The OpenAI Batch API mode of the GPT-4 judge: one uploaded JSONL of requests per round, polled until done.

The batch id is saved before polling starts, so a run killed while the batch is in flight resumes by polling
the same batch: a batch is never submitted, and so never paid for, twice. Answers land in the same per-call
cache as online mode. An unparseable answer gets a further round with the next attempt index.
"""
from __future__ import annotations

import io
import json
import time

from safealign import BenchError
from safealign.eval.judges import Comparison, Verdict
from safealign.eval.openai_judge import parse_scores
from safealign.stages import digest, write_atomic

DONE = ("completed", "failed", "expired", "cancelled")


def judge_batch(judge, items: list[Comparison]) -> list[Verdict]:
    verdicts: dict[int, Verdict] = {}
    pending = list(range(len(items)))
    for attempt in range(judge.cfg.parse_retries + 1):
        requests = {}
        for i in pending:
            key, body = judge.request(items[i], attempt)
            if judge.cached(key) is None:
                requests[key] = body
        errors = _run_batch(judge, requests) if requests else {}
        still = []
        for i in pending:
            key, body = judge.request(items[i], attempt)
            answer = judge.cached(key)
            if answer is None:       # failed items are not cached, so a rerun submits them again
                verdicts[i] = Verdict(None, None, False, errors.get(key, "no answer in the batch output"),
                                      retryable=True)
                continue
            scores = parse_scores(answer["content"])
            if scores:
                verdicts[i] = Verdict(scores[0], scores[1], True, answer["content"])
            else:
                verdicts[i] = Verdict(None, None, False, answer["content"])
                still.append(i)
        pending = still
        if not pending:
            break
    judge.usage.failed += sum(not v.ok for v in verdicts.values())
    return [verdicts[i] for i in range(len(items))]


def wire_body(body: dict) -> dict:
    """The request as the server reads it: the client's extra_body fields merged into the body, as the openai
    client sends them online."""
    return {**{k: v for k, v in body.items() if k != "extra_body"}, **body.get("extra_body", {})}


def _run_batch(judge, requests: dict[str, dict]) -> dict[str, str]:
    """Submit (or resume) one batch, cache every answer it returns; the errors of failed items by key."""
    if judge.cache_dir is None:
        raise BenchError("batch mode needs a cache folder to keep the batch id and answers")
    state_path = judge.cache_dir / "batches" / f"{digest(sorted(requests))}.json"
    if state_path.exists():
        batch_id = json.loads(state_path.read_text())["batch_id"]
        judge.log(f"judge batch {batch_id}: resuming (submitted by an earlier run)")
    else:
        lines = "".join(json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions",
                                    "body": wire_body(body)}) + "\n" for key, body in requests.items())
        upload = judge.client.files.create(file=("requests.jsonl", io.BytesIO(lines.encode())), purpose="batch")
        batch = judge.client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                            completion_window="24h")
        batch_id = batch.id
        write_atomic(state_path, json.dumps({"batch_id": batch_id, "requests": len(requests)}))
        judge.usage.sent += len(requests)
        judge.log(f"judge batch {batch_id}: {len(requests)} requests submitted")
    while True:
        batch = judge.client.batches.retrieve(batch_id)
        if batch.status in DONE:
            break
        time.sleep(judge.cfg.batch_poll_seconds)
    if batch.status != "completed" or not batch.output_file_id:
        state_path.unlink()        # nothing to collect: a later run may submit again
        raise BenchError(f"judge batch {batch_id} ended '{batch.status}' with no output; rerun to submit again")
    errors = {}
    for line in judge.client.files.content(batch.output_file_id).text.splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        response = rec.get("response") or {}
        if response.get("status_code") == 200:
            body = response["body"]
            answer = {"content": body["choices"][0]["message"]["content"] or "", "usage": body.get("usage") or {}}
            judge.store(rec["custom_id"], answer)
            judge.count_tokens(answer)
        else:
            errors[rec["custom_id"]] = f"batch item failed with status {response.get('status_code')}"
    state_path.unlink()            # collected: the answers are in the cache now
    return errors
