"""Training stages under `accelerate launch`: two processes (gloo, on this CPU) train the tiny DPO(H) stage
through the real CLI and reach the single-process losses at the same global batch; only one rank writes."""
import json
from pathlib import Path

import pytest

from conftest import bench_run
from safealign import BenchError
from safealign.launch import CONFIGS, LaunchConfig, check, command
from test_sacpo_tiny import stage_of


def test_launch_settings_are_checked_while_planning(tmp_path):
    with pytest.raises(BenchError, match="launch.processes = 0"):
        check(LaunchConfig(processes=0))
    with pytest.raises(BenchError, match="launch.kinds: 'judge'"):
        check(LaunchConfig(processes=2, kinds=["judge"]))
    with pytest.raises(BenchError, match=r"config = 'zero7'.*ddp, fsdp, zero3"):
        check(LaunchConfig(processes=2, config="zero7"))
    argv = command(LaunchConfig(processes=2, config="fsdp", extra_args=["--main_process_port", 29511]), tmp_path / "j")
    assert argv[1:3] == ["-m", "accelerate.commands.launch"] and argv[argv.index("--num_processes") + 1] == "2"
    assert argv[argv.index("--config_file") + 1].endswith("launch_configs/fsdp.yaml") and "29511" in argv
    assert argv[-3:] == ["-m", "safealign.launch", str(tmp_path / "j")]


def losses(stage) -> list[float]:
    return [h["loss"] for h in json.loads((stage / "log_history.json").read_text()) if "loss" in h]


def test_two_processes_reach_the_single_process_losses(reference_only_cache, tmp_path):
    """DDP on 2 ranks x 16 pairs = one process x 32 pairs: the same samples in every step (accelerate hands rank r
    every 2nd batch of the same seeded order), gradients averaged. Tolerance 1e-4 on the logged losses (about
    0.69 -> 0.6): only the all-reduce's order of float32 additions differs, ~1e-7 a step over 20 steps."""
    cache = reference_only_cache
    small = ["--set", "train.epochs=0.5", "--set", "diagnostics.samples=0", "--set", "judge.all_pairs=false"]
    one = bench_run("dpo-h", tmp_path / "one", cache, *small)
    assert one.returncode == 0, one.stderr[-3000:]
    single, _ = stage_of(cache, "dpo-h")
    two = bench_run("dpo-h", tmp_path / "two", cache, *small, "--set", "train.batch_size=16",
                    "--set", "launch.processes=2")
    assert two.returncode == 0, two.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in cache.glob("align/*/stage.json")]
    launched = next(cache / "align" / r["key"] for r in records if r["config"]["step"]["batch_size"] == 16)
    assert len(losses(single)) >= 3 and losses(launched) == pytest.approx(losses(single), abs=1e-4)
    assert "Traceback" not in (launched / "launch.log").read_text()
    assert sorted(p.name for p in launched.glob("rank*.log")) == ["rank0.log", "rank1.log"]     # two ranks ran
    assert not (launched / "trainer").exists() and (launched / "model" / "config.json").exists()
    assert "accelerate launch, 2 processes, ddp" in (tmp_path / "two" / "run.log").read_text()


def test_a_launched_stage_is_planned_with_its_processes_and_the_same_key(tmp_path):
    from safealign.run import Run
    plain = Run("tiny", "dpo-h", tmp_path / "a", tmp_path / "c", echo=False)
    launched = Run("tiny", "dpo-h", tmp_path / "b", tmp_path / "c", overrides=["launch.processes=4"], echo=False)
    step = {r: next(s for s in run.graph if s.label == "dpo-h") for r, run in (("plain", plain), ("launched", launched))}
    assert step["plain"].key == step["launched"].key and "launch" not in step["plain"].runtime
    assert step["launched"].runtime["launch"]["processes"] == 4 and step["launched"].resources["cpus"] == 4
    gen = next(s for s in launched.graph if s.kind == "generate")
    assert "launch" not in gen.runtime and gen.resources["cpus"] == 1      # only training kinds are launched


def rl_curves(cache) -> list[dict]:
    (stage,) = list(cache.glob("rl/*/curves.jsonl"))
    return [json.loads(x) for x in stage.read_text().splitlines()]


def score_metrics(cache) -> dict:
    out = {}
    for p in cache.glob("score-model/*/metrics.json"):
        m = json.loads(p.read_text())
        out["cost" if "sign_accuracy" in m else "reward"] = m
    return out


def test_safe_rlhf_on_two_processes_ddp_and_fsdp_reaches_the_single_process_figures(reference_only_cache, tmp_path):
    """Safe RLHF's score models and a short PPO-Lagrangian stage (4 steps of 8 rollouts) on one process, then all
    three on two: as DDP (whole models, half of each batch per process, gradients averaged, episodes gathered for
    lambda), and as FSDP (every one of the six models split over the two processes). Every answer is sampled
    from its own seed (methods/rollouts.py), so all runs train on the same answers; what differs is float order
    (the all-reduce or reduce-scatter, the narrower padding of a half batch), ~1e-6 on these figures.
    Tolerance 1e-3 relative: a sampled token flipped by that noise would move a step's reward or loss by ~1e-2
    and fail the test, as would a shard trained on the wrong prompts or pairs."""
    import shutil
    small = ["--set", "diagnostics.samples=0", "--set", "judge.all_pairs=false", "--set", "methods.saferlhf.steps=4",
             "--set", "methods.saferlhf.rollout_batch=8", "--set", "methods.saferlhf.max_new_tokens=16",
             "--set", "methods.saferlhf.reward_model_epochs=1", "--set", "methods.saferlhf.cost_model_epochs=1",
             "--set", "methods.saferlhf.score_model_batch=64"]       # 20 score-model steps each: CI time
    one = bench_run("saferlhf", tmp_path / "one", reference_only_cache, *small)
    assert one.returncode == 0, one.stderr[-3000:]
    base = rl_curves(reference_only_cache)
    assert len(base) == 4 and len({c["actor_loss"] for c in base}) == 4      # the figures moved: a real comparison
    keys = ("reward", "cost", "lambda", "window", "actor_loss", "critic_loss", "kl", "length")
    for config in ("ddp", "fsdp"):
        cache = tmp_path / f"cache-{config}"
        shutil.copytree(reference_only_cache, cache, ignore=shutil.ignore_patterns("score-model", "rl", "generate",
                                                                                  "judge*"))
        two = bench_run("saferlhf", tmp_path / config, cache, *small, "--set", "launch.processes=2",
                        "--set", f"launch.config={config}")
        assert two.returncode == 0, two.stderr[-3000:]
        curves = rl_curves(cache)
        gap = max(abs(b[k] - a[k]) / max(abs(a[k]), 1e-5) for a, b in zip(base, curves) for k in keys)
        print(f"PPO 2 processes ({config}) vs 1: largest relative difference {gap:.2e}")
        assert len(curves) == 4
        for a, b in zip(base, curves):
            for key in keys:
                assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-5), (config, a["step"], key)
        assert score_metrics(cache) == score_metrics(reference_only_cache)      # held-out figures of both models
        (launched,) = [p.parent for p in cache.glob("rl/*/curves.jsonl")]
        assert sorted(p.name for p in launched.glob("rank*.log")) == ["rank0.log", "rank1.log"]
        assert (tmp_path / config / "run.log").read_text().count(f"accelerate launch, 2 processes, {config}") == 3
        sharded = "FSDP over 2 processes; process 0 holds actor 50%" in (launched / "launch.log").read_text()
        assert sharded == (config == "fsdp")


def test_sharded_ppo_killed_mid_stage_resumes_to_the_same_curves(tmp_path):
    """FSDP on two processes: a PPO stage killed after its checkpoint (gathered from the shards) resumes by
    spreading it over the shards again, and ends with the curves of an uninterrupted sharded run."""
    import subprocess
    import sys

    from helpers import score_model, tiny_model
    sft = tiny_model(tmp_path / "sft", layers=2)
    score_model(tmp_path / "rm", sft, 1)
    score_model(tmp_path / "cm", sft, 2)
    script = Path(__file__).parent / "ppo_resume_check.py"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(CONFIGS / "fsdp.yaml"), "--num_processes", "2", str(script), str(tmp_path)]
    def run(out, *extra):
        return subprocess.run(launch + [str(tmp_path / out), *extra], capture_output=True, text=True, timeout=600)
    whole = run("a")
    assert whole.returncode == 0 and "FSDP over 2 processes" in whole.stdout, whole.stderr[-3000:]
    killed = run("b", "die")
    assert killed.returncode != 0 and (tmp_path / "b" / "checkpoint.pt").exists()
    assert not (tmp_path / "b" / "model").exists()
    resumed = run("b")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = ((tmp_path / d / "curves.jsonl").read_text() for d in ("a", "b"))
    assert a == b and len(a.splitlines()) == 4 and not (tmp_path / "b" / "checkpoint.pt").exists()


def test_own_loops_run_as_ddp_under_zero3_and_the_dry_run_says_how_each_stage_runs(tmp_path, capsys):
    from safealign.cli import main
    from safealign.run import Run
    for config, own in (("zero3", "ddp"), ("fsdp", "fsdp")):
        run = Run("tiny", "saferlhf", tmp_path / config, tmp_path / "c", echo=False,
                  overrides=["launch.processes=2", f"launch.config={config}"])
        how = {s.kind: s.runtime["launch"]["config"] for s in run.graph if "launch" in s.runtime}
        assert how == {"sft": config, "score-model": own, "rl": own}, how
    assert main(["run", "--dry-run", "--benchmark", "tiny", "--methods", "saferlhf", "--cache", str(tmp_path / "c"),
                 "--set", "launch.processes=2", "--set", "launch.config=zero3"]) == 0
    rl = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("rl "))
    assert rl.endswith("accelerate launch, 2 processes, ddp")
