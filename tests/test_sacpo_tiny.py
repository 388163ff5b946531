"""SACPO and P-SACPO on the tiny world through the real CLI, sharing the session's SFT reference."""
import json

import pandas as pd
import torch

from conftest import bench_run
from safealign.eval.generate import read_jsonl
from safealign.methods.preference import implicit_reward_accuracy


def stage_of(cache, label):
    for record in cache.glob("*/*/stage.json"):
        data = json.loads(record.read_text())
        if data["label"] == label:
            return record.parent, data
    raise AssertionError(f"no stage labelled {label}")


def test_sacpo_psacpo_and_shared_dpo_h(tiny, reference_only_cache, tmp_path):
    cache = reference_only_cache
    r = bench_run("sacpo@0.01,psacpo@0.5,dpo-h,dpo-s", tmp_path / "out", cache, "--elo")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert list(summary["method"]) == ["sft", "sacpo@0.01", "psacpo@0.5", "dpo-h", "dpo-s"]

    # DPO(H) is needed by sacpo, psacpo (twice: as a and inside sacpo@0.01) and dpo-h: planned once, trained once.
    log = (tmp_path / "out" / "run.log").read_text().splitlines()
    dpo_h = [line for line in log if "stage dpo-h [align/" in line]
    assert sum(" running" in line for line in dpo_h) == 1 and len(dpo_h) == 2, dpo_h      # running, computed

    # Theorem 1 wiring: step 2 starts from the step-1 model and uses it as its reference.
    step1, _ = stage_of(cache, "dpo-h")
    step2, record = stage_of(cache, "sacpo@0.01")
    assert record["inputs"]["policy"] == record["inputs"]["reference"] == str(step1)
    assert record["config"]["step"]["beta"] == 0.01 and record["config"]["step"]["target"] == "safety"

    # After DPO(S) steps the implicit reward (beta/lambda) log(pi/pi_ref) ranks the safer answer first on
    # most training pairs (pairs whose two answers are equally safe carry coin-flip labels).
    rows = read_jsonl(cache / "world" / next(p.name for p in (cache / "world").iterdir()) / "train.jsonl")[:400]
    template = "BEGINNING OF CONVERSATION: USER: {input} ASSISTANT:"
    acc_sacpo = implicit_reward_accuracy(step2 / "model", step1 / "model", rows, "safety", template, 0.01)
    sft, _ = stage_of(cache, "sft")
    dpo_s, _ = stage_of(cache, "dpo-s")
    acc_dpo_s = implicit_reward_accuracy(dpo_s / "model", sft / "model", rows, "safety", template, 0.01)
    # measured over seeds 0-2: sacpo@0.01 0.700-0.738, DPO(S) 0.728-0.730 (chance 0.5); margin 0.1
    assert acc_sacpo > 0.6 and acc_dpo_s > 0.6, (acc_sacpo, acc_dpo_s)

    # P-SACPO at q = 0.5 is exactly the midpoint of DPO(H) and DPO(H)->DPO(S)@0.01.
    from safealign.models import load_policy
    merged, _ = stage_of(cache, "psacpo@0.5")
    pm, pa, pb = (load_policy(p / "model")[0].state_dict() for p in (merged, step1, step2))
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(pm[name], (0.5 * pa[name].double() + 0.5 * pb[name].double()).float())

    # --elo judged every pair: Elo/BT table with SFT anchored at 1000, and Figures 2 and 3 on disk.
    ratings = pd.read_csv(tmp_path / "out" / "elo.csv")
    assert set(ratings["method"]) == set(summary["method"]) and set(ratings["kind"]) == {"helpfulness", "harmlessness"}
    assert (ratings[ratings["method"] == "sft"]["elo"] - 1000).abs().max() < 1e-6
    dpo_h = ratings[(ratings["method"] == "dpo-h") & (ratings["kind"] == "helpfulness")].iloc[0]
    assert dpo_h["elo"] > 1000 and dpo_h["bt_low"] <= dpo_h["bt"] <= dpo_h["bt_high"]
    from safealign.cli import main
    assert main(["plot", str(tmp_path / "out"), "--paper"]) == 0
    for stem in ("tradeoff", "figure2", "figure3"):
        for ext in ("png", "pdf"):
            assert (tmp_path / "out" / "figures" / f"{stem}.{ext}").stat().st_size > 10_000
