"""URL sources with a pinned sha256, served by a real HTTP server on loopback: downloaded once, checked, kept, read
offline afterwards; a wrong hash or no network is one line and leaves nothing behind."""
import hashlib
import json

import pytest

from safealign import BenchError
from safealign.data import load_prompts
from safealign.sources import cached_path, fetch, resolve


def test_a_pinned_url_is_downloaded_once_checked_and_read_offline(loopback_files, tmp_path):
    base, served, hits, httpd = loopback_files
    rows = [{"prompt": f"question {i}", "category": "Crime"} for i in range(3)]
    (served / "problem.json").write_text(json.dumps(rows))
    pin = hashlib.sha256((served / "problem.json").read_bytes()).hexdigest()
    url, downloads, lines = f"{base}/problem.json", tmp_path / "downloads", []
    path = fetch(url, pin, downloads, lines.append)
    assert path == cached_path(url, downloads) and json.loads(path.read_text()) == rows
    assert len(hits) == 1 and pin in lines[0] and "not pinned" not in lines[0]
    assert [p.name for p in path.parent.iterdir()] == ["problem.json"]          # no partial file left
    httpd.shutdown()                                                           # offline from here on
    prompts = load_prompts(resolve(url, pin, downloads, lines.append), prefix="redteam")
    assert [p["prompt_id"] for p in prompts] == ["redteam-000", "redteam-001", "redteam-002"] and len(hits) == 1
    assert resolve("PKU-Alignment/PKU-SafeRLHF-30K", "", downloads) == "PKU-Alignment/PKU-SafeRLHF-30K"


def test_an_unpinned_url_logs_its_hash_to_pin(loopback_files, tmp_path):
    base, served, _, _ = loopback_files
    (served / "a.jsonl").write_text('{"prompt": "hi"}\n')
    lines = []
    fetch(f"{base}/a.jsonl", "", tmp_path / "d", lines.append)
    digest = hashlib.sha256(b'{"prompt": "hi"}\n').hexdigest()
    assert f'not pinned: add sha256 = "{digest}"' in lines[0]


def test_a_wrong_hash_or_no_network_is_one_line_and_keeps_nothing(loopback_files, tmp_path):
    base, served, _, httpd = loopback_files
    (served / "p.json").write_text("[]")
    with pytest.raises(BenchError, match=r"p.json downloaded with sha256 [0-9a-f]{64}, but the benchmark pins 0+") as e:
        fetch(f"{base}/p.json", "0" * 64, tmp_path / "d", print)
    assert "\n" not in str(e.value)
    assert list(cached_path(f"{base}/p.json", tmp_path / "d").parent.iterdir()) == []
    httpd.shutdown()
    httpd.server_close()
    with pytest.raises(BenchError, match=r"could not download .*/q.json .*run once with network access, or "
                                         r"download it by hand to .*q.json") as e:
        fetch(f"{base}/q.json", "", tmp_path / "d", print)
    assert "\n" not in str(e.value)
    # a kept copy that no longer matches its pin (edited by hand, or a changed pin) is refused, not used
    kept = cached_path(f"{base}/r.json", tmp_path / "d")
    kept.parent.mkdir(parents=True)
    kept.write_text("[1]")
    with pytest.raises(BenchError, match="kept copy of .* has sha256 .* delete it to download again"):
        fetch(f"{base}/r.json", "f" * 64, tmp_path / "d", print)


def test_papers_prompt_sets_are_pinned_urls_at_a_commit():
    """`paper` names both prompt sets by a URL at a full commit hash with a sha256, so they are found and checked
    without the user fetching files (the download itself needs a network; see the tests above for the path)."""
    import re

    from safealign.config import load_benchmark
    sets = load_benchmark("paper")["eval_prompts"]
    assert set(sets) == {"helpful", "redteam"}
    for spec in sets.values():
        assert re.fullmatch(r"https://raw\.githubusercontent\.com/line/sacpo/[0-9a-f]{40}/asset/\w+\.json",
                            spec["source"]), spec
        assert re.fullmatch(r"[0-9a-f]{64}", spec["sha256"]), spec
