"""`--report-to`: the choice lives in the environment (never in a hashed stage config); TRL stages and the PPO loop
write TensorBoard events into their stage's tracking/ folder when it is on, and nothing when it is off."""
import json

import pytest

from helpers import score_model, tiny_model
from safealign import BenchError, tracking, world
from safealign.cli import main

TEMPLATE = "USER: {input} ASSISTANT:"


@pytest.fixture(autouse=True)
def restore_env(monkeypatch):
    """Every variable the code under test sets is put back after each test (set here first, so monkeypatch
    remembers the original, absent or not)."""
    monkeypatch.setenv(tracking.REPORT_ENV, "none")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "unused")


def scalars(folder) -> dict:
    """{tag: [values]} of every TensorBoard event file under `folder`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = {}
    for run in sorted({p.parent for p in folder.rglob("events.out.tfevents*")}):
        acc = EventAccumulator(str(run))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return out


@pytest.mark.parametrize("bad", ["tensorbord", "tensorboard,neptune", "all"])
def test_bad_value_is_one_line_naming_the_valid_values(bad):
    with pytest.raises(BenchError) as e:
        tracking.set_report_to(bad)
    msg = str(e.value)
    assert "\n" not in msg and all(name in msg for name in ("tensorboard", "wandb", "mlflow", "none"))
    assert main(["run", "--report-to", bad, "--dry-run"]) == 2       # refused before any plan is built


def test_missing_package_names_it_and_the_install_command(monkeypatch):
    monkeypatch.setitem(tracking.BACKENDS, "wandb", ("no_such_module_here", "pip install wandb"))
    with pytest.raises(BenchError, match=r"wandb.*no_such_module_here.*pip install wandb") as e:
        tracking.set_report_to("tensorboard,wandb")
    assert "\n" not in str(e.value)


def test_report_to_reads_and_set_report_to_writes_the_environment(monkeypatch):
    monkeypatch.delenv(tracking.REPORT_ENV)
    assert tracking.report_to() == []
    monkeypatch.setenv(tracking.REPORT_ENV, "none")
    assert tracking.report_to() == []
    monkeypatch.setenv(tracking.REPORT_ENV, "tensorboard, wandb")
    assert tracking.report_to() == ["tensorboard", "wandb"]
    tracking.set_report_to("tensorboard")
    assert tracking.report_to() == ["tensorboard"] and tracking.os.environ[tracking.REPORT_ENV] == "tensorboard"
    tracking.set_report_to("none")
    assert tracking.report_to() == [] and isinstance(tracking.tracker("x", "y"), tracking.NoTracker)


@pytest.mark.parametrize("on", [True, False])
def test_dpo_stage_writes_its_loss_to_tensorboard_in_the_stage_folder(tmp_path, on):
    from safealign.methods.preference import StepConfig, train_step
    tracking.set_report_to("tensorboard" if on else "none")
    policy = tiny_model(tmp_path / "policy")
    cfg = StepConfig(epochs=1, batch_size=8, max_length=64, learning_rate=1e-3, save_steps=1000)
    work = tmp_path / "dpo"
    train_step(cfg, policy, policy, world.build()["train"][:24], TEMPLATE, work, seed=0)   # 3 steps
    assert (work / "model").exists() and not (work / "trainer").exists()   # the checkpoints went; tracking stays
    if not on:
        assert not (work / "tracking").exists()
        return
    found = scalars(work / "tracking")
    loss = [tag for tag in found if "loss" in tag]
    assert loss and all(v == v for tag in loss for v in found[tag]), found.keys()


@pytest.mark.parametrize("on", [True, False])
def test_ppo_logs_reward_cost_and_lambda_each_step(tmp_path, on):
    from safealign.methods import ppo
    tracking.set_report_to("tensorboard" if on else "none")
    sft = tiny_model(tmp_path / "sft")
    rm, cm = score_model(tmp_path / "rm", sft, 1), score_model(tmp_path / "cm", sft, 2)
    cfg = ppo.PPOConfig(steps=3, rollout_batch=4, max_new_tokens=8, save_every=0)
    work = tmp_path / "rl"
    ppo.train_ppo(cfg, sft, rm, cm, world.build()["train"][:12], TEMPLATE, work, seed=0)
    if not on:
        assert not (work / "tracking").exists()
        return
    found = scalars(work / "tracking")
    for key in ("reward", "cost", "lambda", "kl", "actor_loss"):
        assert len(found.get(key, [])) == 3, (key, found.keys())
    curves = [json.loads(x) for x in (work / "curves.jsonl").read_text().splitlines()]
    assert found["lambda"] == pytest.approx([c["lambda"] for c in curves], rel=1e-6)     # the same figures
