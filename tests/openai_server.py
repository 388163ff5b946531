"""A real HTTP server on loopback that speaks the parts of the OpenAI API the judge uses:
POST /v1/chat/completions, and for the Batch API POST /v1/files, POST /v1/batches, GET /v1/batches/{id},
GET /v1/files/{id}/content. It answers with scripted behaviours and counts every request it receives."""
from __future__ import annotations

import email.parser
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def default_answer(body: dict) -> str:
    """A deterministic verdict: the longer answer scores higher (scores read from the prompt text)."""
    text = body["messages"][-1]["content"]
    a = re.search(r"\[Answer A\]\n(.*?)\n\n\[Answer B\]", text, re.S).group(1)
    b = re.search(r"\[Answer B\]\n(.*?)\n\n", text, re.S).group(1)
    sa, sb = min(10, 1 + len(a) // 10), min(10, 1 + len(b) // 10)
    return f"{sa} {sb}\nAnswer lengths decided it."


class FakeOpenAI:
    def __init__(self):
        self.requests: list[tuple[str, str]] = []      # (method, path) of every request
        self.script: list[str] = []                     # behaviours for the next chat calls: ok|401|429|500|timeout|malformed
        self.stall_seconds = 3.0
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_polls_before_done = 1
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
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
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
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
                    body = fake.completion(req["body"], default_answer(req["body"]))
                    lines.append(json.dumps({"id": "r", "custom_id": req["custom_id"],
                                             "response": {"status_code": 200, "body": body}}))
                fid = f"file-{len(fake.files)}"
                fake.files[fid] = ("\n".join(lines) + "\n").encode()
                return fid

            def _chat(self, body: dict):
                behaviour = fake.next_behaviour()
                if behaviour == "429":
                    return self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                                      {"retry-after": "0"})
                if behaviour == "401":
                    return self._send(401, {"error": {"message": "Incorrect API key provided", "type": "auth"}})
                if behaviour == "500":
                    return self._send(500, {"error": {"message": "server error"}})
                if behaviour == "timeout":
                    time.sleep(fake.stall_seconds)
                content = "I prefer the first answer." if behaviour == "malformed" else default_answer(body)
                self._send(200, fake.completion(body, content))

        return Handler
