"""paper-mini: paper.toml with only what a CPU cannot hold replaced (issue 18 item 10). The fast tests pin the
inheritance (`extends`) and the list of replaced keys, so a change in paper.toml reaches paper-mini; the slow one
runs `bench run --benchmark paper-mini` for every registered method, offline and with no API key."""
import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from safealign import BenchError
from safealign.config import load_benchmark

# What paper-mini replaces, and why: everything else must be paper.toml's own value.
REPLACED = {
    "name", "version", "description", "extends",                               # its own identity
    "data.source", "data.sha256", "data.test_source", "data.test_sha256",      # the hub data -> local hub-format files
    "eval_prompts.helpful.source", "eval_prompts.helpful.sha256",              # SACPO's prompt files -> mini ones
    "eval_prompts.redteam.source", "eval_prompts.redteam.sha256",
    "plan.train_pairs", "plan.eval_prompts",                                   # the sizes of those files
    "policy.base", "policy.sft", "policy.dtype",                              # alpaca-7b -> a tiny bf16 pi_ref ...
    "policy.tiny.vocab_size", "policy.tiny.hidden_size", "policy.tiny.heads",
    "policy.tiny.layers", "policy.tiny.intermediate_size", "policy.tiny.max_positions",
    "sft.epochs", "sft.learning_rate", "sft.batch_size", "sft.warmup_ratio",  # ... SFT-trained here
    "sft.save_steps", "sft.gradient_checkpointing",
    "train.epochs",                                                            # one pass, not three
    "generation.backend",                                                      # vLLM's engine start on a CPU
    "judge.name",                                                              # GPT-4 -> the offline oracle
    "methods.saferlhf.steps", "methods.saferlhf.rollout_batch",                # fewer PPO steps
    "methods.repo.steps", "methods.repo.rollout_batch",
    "methods.saferlhf.reward_model_epochs", "methods.saferlhf.cost_model_epochs",   # one pass per score model
    "methods.repo.reward_model_epochs", "methods.repo.cost_model_epochs",
    "methods.mocan.threshold",                                                 # reachable by barely trained models
    "methods.saferlhf.ptx_source", "methods.saferlhf.ptx_sha256",              # Alpaca -> the mini Alpaca file
    "methods.repo.ptx_source", "methods.repo.ptx_sha256",
}
MINI = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_mini"


def flat(table: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_paper_mini_is_paper_except_the_replaced_keys():
    paper, mini = flat(load_benchmark("paper")), flat(load_benchmark("paper-mini"))
    assert {k for k in mini if k not in paper or mini[k] != paper[k]} <= REPLACED
    assert {k: v for k, v in paper.items() if k not in REPLACED} == {k: v for k, v in mini.items() if k not in REPLACED}
    assert mini["judge.repetitions"] == paper["judge.repetitions"] == 3          # the protocol is paper's
    assert mini["train.bf16"] and mini["train.grad_accum"] == 32 and mini["train.max_length"] == 512


def test_extends_merges_tables_and_keeps_each_files_identity_and_paths(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "parent.toml").write_text(
        'name = "parent"\nversion = 7\ndescription = "p"\nseed = 3\n[data]\nsource = "./d.jsonl"\nrevision = "x"\n'
        '[train]\nepochs = 3\nbf16 = true\n[methods.saferlhf]\nsteps = 9\nthreshold = 0.0\n')
    (tmp_path / "child.toml").write_text(
        'extends = "base/parent.toml"\nname = "child"\n[train]\nepochs = 1\n[methods.saferlhf]\nsteps = 2\n'
        '[eval_prompts.helpful]\nsource = "../h.json"\n')
    cfg = load_benchmark(str(tmp_path / "child.toml"))
    assert cfg["name"] == "child" and "version" not in cfg and "description" not in cfg and cfg["seed"] == 3
    assert cfg["train"] == {"epochs": 1, "bf16": True}
    assert cfg["methods"]["saferlhf"] == {"steps": 2, "threshold": 0.0}
    assert cfg["data"] == {"source": str(tmp_path / "base" / "d.jsonl"), "revision": "x"}   # the parent's folder
    assert cfg["eval_prompts"]["helpful"]["source"] == str(tmp_path.parent / "h.json")      # the child's folder


def test_extends_unknown_parent_and_loops_are_one_line(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "papr"\nname = "a"\n')
    with pytest.raises(BenchError, match=r'^a.toml: extends = "papr" names no benchmark: choose one of .*paper'):
        load_benchmark(str(tmp_path / "a.toml"))
    (tmp_path / "b.toml").write_text('extends = "c.toml"\nname = "b"\n')
    (tmp_path / "c.toml").write_text('extends = "b.toml"\nname = "c"\n')
    with pytest.raises(BenchError, match=r"loops \(b.toml -> c.toml -> b.toml\)") as e:
        load_benchmark(str(tmp_path / "b.toml"))
    assert "\n" not in str(e.value)


def test_shipped_files_are_the_scripts_and_in_the_hub_formats(tmp_path):
    from safealign.benchmarks.make_paper_mini import write
    from safealign.data import PREFERENCE_COLUMNS, load_preferences, load_prompts
    for path in write(tmp_path):
        assert path.read_bytes() == (MINI / path.name).read_bytes(), f"rerun make_paper_mini: {path.name} changed"
    train = [json.loads(line) for line in (MINI / "train.jsonl").read_text().splitlines()]
    assert all(list(r) == list(PREFERENCE_COLUMNS) for r in train) and len(load_preferences(str(MINI / "train.jsonl"))) == 128
    for name, category in (("helpful_problem.json", "alpaca_eval_helpful_base"), ("safety_problem.json", "Crime")):
        rows = json.loads((MINI / name).read_text())
        assert all(set(r) == {"prompt", "category"} for r in rows) and rows[0]["category"] == category
        assert len(load_prompts(str(MINI / name))) == 16
    ptx = json.loads((MINI / "alpaca_data.json").read_text())
    assert all(set(r) == {"instruction", "input", "output"} for r in ptx)
    redteam_topics = {r["prompt"] for r in json.loads((MINI / "safety_problem.json").read_text())}
    assert not {r["instruction"] for r in ptx} & ({r["prompt"] for r in train} | redteam_topics)
    # the pins in paper-mini.toml are these files' hashes (sources.resolve checks them)
    from safealign.sources import sha256_of
    mini = tomllib.loads((MINI.parent / "paper-mini.toml").read_text())
    pins = {mini["data"]["source"]: mini["data"]["sha256"], mini["data"]["test_source"]: mini["data"]["test_sha256"],
            **{s["source"]: s["sha256"] for s in mini["eval_prompts"].values()},
            **{m["ptx_source"]: m["ptx_sha256"] for m in (mini["methods"]["saferlhf"], mini["methods"]["repo"])}}
    for source, pin in pins.items():
        assert sha256_of(MINI.parent / source) == pin, source


def test_a_pinned_local_file_with_another_hash_is_refused(tmp_path):
    from safealign.sources import resolve, sha256_of
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "x"}\n')
    assert resolve(str(path), sha256_of(path), tmp_path / "downloads") == str(path)
    with pytest.raises(BenchError, match="the benchmark pins 0000"):
        resolve(str(path), "0" * 64, tmp_path / "downloads")


def test_policy_dtype_is_checked_and_needs_sft():
    from safealign.config import check_sections
    cfg = load_benchmark("paper-mini")
    with pytest.raises(BenchError, match="policy.dtype = 'bf16': choose one of bfloat16"):
        check_sections({**cfg, "policy": {**cfg["policy"], "dtype": "bf16"}})
    with pytest.raises(BenchError, match="needs policy.sft = true"):
        check_sections({**load_benchmark("paper"), "policy": {"base": "x", "dtype": "bfloat16"}})


def test_save_in_dtype_rewrites_the_checkpoint_in_bf16(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from helpers import tiny_model
    from safealign.methods.sft import save_in_dtype
    folder = tiny_model(tmp_path / "m")
    before = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    save_in_dtype(folder, "bfloat16")
    after = AutoModelForCausalLM.from_pretrained(folder)
    assert after.dtype == torch.bfloat16 and json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    for name, tensor in after.state_dict().items():
        assert torch.equal(tensor, before[name].to(torch.bfloat16)), name


def every_method() -> list[str]:
    """Every registered method, a sweep cut to one point (SACPO variants at 0.025, merges at q 0.75)."""
    from safealign.registry import METHODS
    return [f"{n}@{0.025 if m.sweep == 'ratios' else 0.75}" if m.sweep else n for n, m in METHODS.items()]


def offline_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    return {**env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def test_plan_and_dry_run_of_paper_mini(tmp_path):
    base = [sys.executable, "-m", "safealign.cli"]
    plan = subprocess.run(base + ["plan", "--benchmark", "paper-mini", "--methods", "sacpo,saferlhf", "--cache",
                                  str(tmp_path / "cache")], capture_output=True, text=True, env=offline_env())
    assert plan.returncode == 0, plan.stderr[-2000:]
    dry = subprocess.run(base + ["run", "--benchmark", "paper-mini", "--methods", ",".join(every_method()), "--dry-run",
                                 "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")],
                         capture_output=True, text=True, env=offline_env())
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "sacpo@0.025" in dry.stdout and "naive-merge@0.75" in dry.stdout and "tiny-base" in dry.stdout


def test_paper_mini_runs_every_method_offline_with_no_api_key(tmp_path):
    methods = every_method()
    r = subprocess.run([sys.executable, "-m", "safealign.cli", "run", "--benchmark", "paper-mini", "--methods",
                        ",".join(methods), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")],
                       capture_output=True, text=True, env=offline_env(), timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    s = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("method")
    assert set(s.index) == set(methods)
    for label in methods:
        if label != "sft":
            for col in ("helpfulness_win_rate", "harmlessness_win_rate"):
                assert math.isfinite(s.loc[label, col]), (label, col)
            assert s.loc[label, "helpfulness_judgments"] == 16 * 2 * 3        # 16 prompts x both orders x 3 rounds
    config = json.loads((tmp_path / "out" / "config.json").read_text())["benchmark"]
    sft = next((tmp_path / "cache" / "sft").glob("*/model/config.json"))
    assert json.loads(sft.read_text())["dtype"] == "bfloat16" and config["train"]["grad_accum"] == 32
