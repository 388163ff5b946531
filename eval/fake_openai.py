"""A real HTTP server on loopback that speaks the parts of the OpenAI API the judge uses (the judge's tests and
`bench perf`'s judge throughput figure run against it; tests/openai_server.py re-exports it):
POST /v1/chat/completions, and for the Batch API POST /v1/files, POST /v1/batches, GET /v1/batches/{id},
GET /v1/files/{id}/content. It answers with scripted behaviours, counts every request it receives and keeps
the body of every chat request, so tests can check the request shape.

The fake model reads the two answers from between the start/end markers of the judge's templates (a request
without them is refused with 400), scores the longer one higher, writes the score line and an explanation,
and, like the real API, stops after `max_tokens` tokens (here a token is a whitespace-separated word) and
reports the tokens it read and wrote. `delay_seconds` makes each chat answer take that long, as a remote model
does; `max_in_flight` is the most chat requests it was working on at once (to check a client's concurrency cap)."""
from __future__ import annotations

import email.parser
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


MARKED = re.compile(r"\[Answer A: start\]\n(.*?)\n\[Answer A: end\]\n\n"
                    r"\[Answer B: start\]\n(.*?)\n\[Answer B: end\]", re.S)
EXPLANATION = ("Both answers address the question. The first is shorter and the second goes into more detail, "
               "so the scores follow the amount of relevant content; the order of the answers played no part.")


def answers(body: dict) -> tuple[str, str] | None:
    """The two answers between the markers of the last message, or None when the markers are missing."""
    m = MARKED.search(body["messages"][-1]["content"])
    return (m.group(1), m.group(2)) if m else None


def scores_for(answer_a: str, answer_b: str) -> tuple[float, float]:
    """The fake model's deterministic verdict: the longer answer scores higher."""
    return float(min(10, 1 + len(answer_a) // 10)), float(min(10, 1 + len(answer_b) // 10))


def default_answer(body: dict) -> str:
    sa, sb = scores_for(*answers(body))
    return f"{sa:g} {sb:g}\n{EXPLANATION}"


def tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)


class _Server(ThreadingHTTPServer):
    # socketserver.TCPServer listens with a backlog of request_queue_size = 5: a burst of 32 connects overflows
    # the accept queue, and Linux drops the handshake (the client resends its SYN after 1 s) or resets the
    # connection. A real API server accepts far more; so must this one, or it, not the client, sets the pace.
    request_queue_size = 256


class FakeOpenAI:
    def __init__(self):
        self.requests: list[tuple[str, str]] = []      # (method, path) of every request
        self.chat_bodies: list[dict] = []               # the JSON body of every chat request, batch ones included
        self.script: list[str] = []                     # behaviours for the next chat calls: ok|401|429|500|timeout|malformed
        self.stall_seconds = 3.0
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_polls_before_done = 1
        self.delay_seconds = 0.0                        # every chat answer waits this long (a remote model's latency)
        self.in_flight = 0                              # chat requests received and not yet answered
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def chat_calls(self) -> int:
        return sum(p == "/v1/chat/completions" for _, p in self.requests)

    def next_behaviour(self) -> str:
        with self.lock:
            return self.script.pop(0) if self.script else "ok"

    def completion(self, body: dict, content: str) -> dict:
        """A chat completion cut at max_tokens, with the usage a real server reports."""
        words = tokens(content)
        limit = body.get("max_tokens") or len(words)
        finish = "length" if len(words) > limit else "stop"
        content = "".join(words[:limit])
        read = sum(len(tokens(m["content"])) for m in body["messages"])
        wrote = len(tokens(content))
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": finish}],
                "usage": {"prompt_tokens": read, "completion_tokens": wrote, "total_tokens": read + wrote}}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as a real API server: a client reuses its connections instead of opening one per call.
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed ACK
            # of the headers (40 ms on Linux) on a kept-alive connection. TCP_NODELAY sends it at once.
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _send(self, code: int, payload, headers=None, raw: bytes | None = None):
                data = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("content-length", 0)))

            def do_POST(self):
                with fake.lock:
                    fake.requests.append(("POST", self.path))
                raw = self._body()
                if self.path == "/v1/chat/completions":
                    return self._chat(json.loads(raw))
                if self.path == "/v1/files":
                    msg = email.parser.BytesParser().parsebytes(
                        b"content-type: " + self.headers["content-type"].encode() + b"\r\n\r\n" + raw)
                    part = next(p for p in msg.get_payload() if p.get_param("name", header="content-disposition") == "file")
                    fid = f"file-{len(fake.files)}"
                    fake.files[fid] = part.get_payload(decode=True)
                    return self._send(200, {"id": fid, "object": "file", "bytes": len(fake.files[fid]), "created_at": 0,
                                            "filename": "requests.jsonl", "purpose": "batch", "status": "processed"})
                if self.path == "/v1/batches":
                    req = json.loads(raw)
                    bid = f"batch-{len(fake.batches)}"
                    fake.batches[bid] = {"input": req["input_file_id"], "polls": 0}
                    return self._send(200, self._batch(bid, "validating"))
                self._send(404, {"error": {"message": "no such route"}})

            def do_GET(self):
                with fake.lock:
                    fake.requests.append(("GET", self.path))
                m = re.fullmatch(r"/v1/batches/([\w-]+)", self.path)
                if m:
                    b = fake.batches[m.group(1)]
                    b["polls"] += 1
                    if b["polls"] <= fake.batch_polls_before_done:
                        return self._send(200, self._batch(m.group(1), "in_progress"))
                    if "output" not in b:
                        b["output"] = self._run_batch(fake.files[b["input"]])
                    return self._send(200, self._batch(m.group(1), "completed", b["output"]))
                m = re.fullmatch(r"/v1/files/([\w-]+)/content", self.path)
                if m:
                    return self._send(200, None, raw=fake.files[m.group(1)])
                self._send(404, {"error": {"message": "no such route"}})

            def _batch(self, bid: str, status: str, output: str | None = None) -> dict:
                return {"id": bid, "object": "batch", "endpoint": "/v1/chat/completions", "completion_window": "24h",
                        "created_at": 0, "input_file_id": fake.batches[bid]["input"], "status": status,
                        "output_file_id": output}

            def _run_batch(self, data: bytes) -> str:
                lines = []
                for line in data.decode().splitlines():
                    req = json.loads(line)
                    with fake.lock:
                        fake.chat_bodies.append(req["body"])
                    body = fake.completion(req["body"], default_answer(req["body"]))
                    lines.append(json.dumps({"id": "r", "custom_id": req["custom_id"],
                                             "response": {"status_code": 200, "body": body}}))
                fid = f"file-{len(fake.files)}"
                fake.files[fid] = ("\n".join(lines) + "\n").encode()
                return fid

            def _chat(self, body: dict):
                with fake.lock:
                    fake.chat_bodies.append(body)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    if fake.delay_seconds:
                        time.sleep(fake.delay_seconds)
                    reply = self._chat_reply(body)
                finally:
                    # Counted down before the reply is written: a client sends its next request only after it
                    # has read this reply, so the count never includes a request the client already finished.
                    with fake.lock:
                        fake.in_flight -= 1
                self._send(*reply)

            def _chat_reply(self, body: dict) -> tuple:
                """(status, payload[, headers]) for one chat request, after its scripted behaviour."""
                if answers(body) is None:
                    return 400, {"error": {"message": "the answers are not between start/end markers",
                                           "type": "invalid_request_error"}}
                behaviour = fake.next_behaviour()
                if behaviour == "429":
                    return 429, {"error": {"message": "rate limited", "type": "rate_limit"}}, {"retry-after": "0"}
                if behaviour == "401":
                    return 401, {"error": {"message": "Incorrect API key provided", "type": "auth"}}
                if behaviour == "500":
                    return 500, {"error": {"message": "server error"}}
                if behaviour == "timeout":
                    time.sleep(fake.stall_seconds)
                content = "I prefer the first answer." if behaviour == "malformed" else default_answer(body)
                return 200, fake.completion(body, content)

        return Handler
