"""The spine end to end through the real CLI: TRL training, HF generation, the oracle judge, the cache."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

BENCH = [sys.executable, "-m", "safealign.cli", "run", "--benchmark", "tiny", "--methods", "sft,dpo-h"]


def bench_run(out, cache, *extra, **kw):
    return subprocess.run(BENCH + ["--out", str(out), "--cache", str(cache), *extra], capture_output=True, text=True,
                          **kw)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    r = bench_run(root / "run1", root / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    return root


def summary(folder):
    return pd.read_csv(folder / "summary.csv").set_index("method")


def test_dpo_h_beats_sft_on_helpfulness_and_sft_is_recognised(first_run):
    s = summary(first_run / "run1")
    assert list(s.index) == ["sft", "dpo-h"]
    assert s.loc["dpo-h", "helpfulness_win_rate"] > 0.6
    assert s.loc["dpo-h", "oracle_helpfulness"] > s.loc["sft", "oracle_helpfulness"]
    assert s.loc["sft", "oracle_recognised_share"] >= 0.9
    assert s.loc["dpo-h", "helpfulness_judgments"] == 2 * 48          # 48 prompts x both orders x 1 round
    for name in ("config.json", "figures/tradeoff.png", "figures/tradeoff.pdf", "generations/dpo-h.redteam.jsonl",
                 "judgments/dpo-h.jsonl"):
        assert (first_run / "run1" / name).stat().st_size > 0


def test_second_identical_run_recomputes_no_stage(first_run):
    r = bench_run(first_run / "run2", first_run / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    log = (first_run / "run2" / "run.log").read_text()
    assert "stages: 0 computed" in log and " running" not in log
    pd.testing.assert_frame_equal(summary(first_run / "run1"), summary(first_run / "run2"))


def test_run_killed_inside_a_training_stage_resumes_to_the_same_summary(first_run):
    cache = first_run / "cache-kill"
    for stage in ("world", "base", "sft"):       # keep the reference; kill during the DPO(H) stage
        shutil.copytree(first_run / "cache" / stage, cache / stage)
    proc = subprocess.Popen(BENCH + ["--out", str(first_run / "run3"), "--cache", str(cache)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(cache.glob("align/*.partial/trainer/checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not [p for p in cache.glob("align/*") if not p.name.endswith(".partial")]   # not marked done
    r = bench_run(first_run / "run3", cache)
    assert r.returncode == 0, r.stderr[-3000:]
    log = (first_run / "run3" / "run.log").read_text()
    assert "dpo-h [align/" in log and "resuming" in log
    pd.testing.assert_frame_equal(summary(first_run / "run1"), summary(first_run / "run3"))
