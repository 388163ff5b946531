"""`bench perf`: every figure's quick case runs the real code path and reports what it measured beside its goal
(no speed thresholds here: a figure is a measurement, printed, not a timed test)."""
import json
import math

import pytest

from safealign import BenchError
from safealign.perf import FIGURES, format_figures, run_figures

KEYS = {"figure", "value", "unit", "goal", "ok", "detail"}


def test_sweep_sharing_and_trl_figures_run_both_sides(tmp_path):
    from safealign.perf import train
    sweep = train.sweep_sharing(quick=True)
    assert set(sweep) == KEYS and 0 < sweep["value"] < 2 and "reference pass" in sweep["detail"]
    assert sweep["ok"] == (sweep["value"] <= train.SWEEP_GOAL)
    trl = train.dpo_vs_trl(quick=True)
    assert set(trl) == KEYS and trl["value"] > 0 and "padding" in trl["detail"]


def test_padding_count_reads_the_batches_trl_builds(tmp_path):
    """count_padding on a real DPOTrainer: the attended positions are exactly what the 8 pairs tokenise to (as
    tokens.py splits them, TRL's way), and the total is 2 batches of 8 rows, each as wide as its longest row."""
    from transformers import AutoTokenizer

    from safealign import tokens
    from safealign.methods.preference import StepConfig, dpo_pairs
    from safealign.perf.train import bare_trl, tiny_case
    model, splits, template, _ = tiny_case(tmp_path)
    cfg = StepConfig(epochs=1, batch_size=4, max_length=512, learning_rate=1e-4)     # nothing truncated
    counts = bare_trl(cfg, model, splits["train"][:8], template, tmp_path / "bare")
    tok = AutoTokenizer.from_pretrained(model)
    lengths = [sum(map(len, tokens.prompt_answer_ids(tok, p["prompt"], p[side])))
               for p in dpo_pairs(splits["train"][:8], "helpfulness", template) for side in ("chosen", "rejected")]
    assert counts["tokens"] == sum(lengths)
    assert counts["padded"] % 8 == 0 and sum(lengths) < counts["padded"] <= 16 * max(lengths)


def test_judge_throughput_respects_the_cap(monkeypatch):
    from safealign.perf import judge
    monkeypatch.setattr(judge, "DELAY_SECONDS", 0.05)       # a quicker server: the figure's shape, not its value
    r = judge.throughput(quick=True)
    assert set(r) == KEYS and r["value"] > 1 and "max in flight" in r["detail"]
    in_flight = int(r["detail"].split("max in flight ")[1].split(";")[0])
    assert 1 < in_flight <= judge.WIDE


def test_perf_json_and_table(tmp_path, monkeypatch):
    monkeypatch.setitem(FIGURES, "fake", "safealign.perf.judge:throughput")
    from safealign.perf import judge
    monkeypatch.setattr(judge, "DELAY_SECONDS", 0.0)
    printed = run_figures(["fake"], True, tmp_path)
    record = json.loads((tmp_path / "perf.json").read_text())
    assert record["quick"] is True and record["machine"]["cores"] and len(record["figures"]) == 1
    assert printed.startswith(format_figures(record)) and "[quick cases]" in printed
    assert math.isfinite(record["figures"][0]["value"])
    with pytest.raises(BenchError, match="unknown perf figure 'nope'"):
        run_figures(["nope"], True, tmp_path)


def test_timed_run_counts_the_memory_of_the_whole_process_tree():
    """A parent that starts a child holding 200 MiB for 2 s: the peak counts the child (as a run's Ray workers)."""
    import sys

    from safealign.perf.e2e import timed_run
    child = "import time; x = bytearray(200 * 2**20); time.sleep(2)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}]); print('done')"
    wall, peak, proc = timed_run([sys.executable, "-c", parent])
    assert proc.returncode == 0 and proc.stdout.strip() == "done" and wall >= 2
    assert peak > 200 * 2**20
