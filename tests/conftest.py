import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCH = [sys.executable, "-m", "safealign.cli", "run", "--benchmark", "tiny"]


def bench_run(methods, out, cache, *extra, **kw):
    return subprocess.run(BENCH + ["--methods", methods, "--out", str(out), "--cache", str(cache), *extra],
                          capture_output=True, text=True, **kw)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """One real `bench run --benchmark tiny --methods sft,dpo-h` (about 90 s); its cache is reused by later tests."""
    root = tmp_path_factory.mktemp("tiny")
    r = bench_run("sft,dpo-h", root / "run1", root / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    return root


@pytest.fixture
def reference_only_cache(tiny, tmp_path):
    """A cache holding the tiny world and its SFT reference but no alignment step yet."""
    cache = tmp_path / "cache"
    for stage in ("world", "base", "sft"):
        shutil.copytree(tiny / "cache" / stage, cache / stage)
    return cache


@pytest.fixture
def loopback_files(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a folder: (base URL, the folder, the paths requested, the server)."""
    served, hits = tmp_path / "served", []
    served.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):
            hits.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served, hits, httpd
    httpd.shutdown()
    httpd.server_close()
