"""Experiment tracking (`bench run --report-to tensorboard|wandb|mlflow`), off by default.

The choice travels in an environment variable, never in a stage's config: stage configs are hashed into the
cache keys, and watching a run must not make it a different run. The variable also reaches what a run starts
(child processes, and Ray workers, which are given every SAFEALIGN_* variable). TRL-based stages hand the choice
to transformers' own callbacks (methods/training.py `trainer_args`); the suite's own loops (PPO) log through
`tracker`, which drives accelerate's tracker classes.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from safealign import BenchError

REPORT_ENV = "SAFEALIGN_REPORT_TO"
# backend -> (the module it needs, what to install)
BACKENDS = {"tensorboard": ("tensorboard", "pip install tensorboard"),
            "wandb": ("wandb", "pip install wandb"),
            "mlflow": ("mlflow", "pip install mlflow")}


def parse(value: str) -> list[str]:
    """The backends named by a comma-separated value ('none' or '' = none); one line naming the valid values
    for anything else."""
    names = [n.strip().lower() for n in (value or "").split(",") if n.strip()]
    if names in ([], ["none"]):
        return []
    bad = [n for n in names if n not in BACKENDS]
    if bad:
        raise BenchError(f"--report-to '{value}': '{bad[0]}' is not a tracker; use none or a comma-separated "
                         f"subset of {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))       # each once, in the order given


def set_report_to(value: str) -> None:
    """Check the choice (and that each backend's package is installed) now, before any stage runs, then put it
    in the environment for this process and everything it starts."""
    names = parse(value)
    for name in names:
        module, install = BACKENDS[name]
        if importlib.util.find_spec(module) is None:
            raise BenchError(f"--report-to {name} needs the '{module}' package, which is not installed: {install}")
    os.environ[REPORT_ENV] = ",".join(names) or "none"


def report_to() -> list[str]:
    """The chosen backends, from the environment ([] when unset or 'none')."""
    return parse(os.environ.get(REPORT_ENV, ""))


class NoTracker:
    """What `tracker` gives when tracking is off: logging costs nothing and writes nothing."""

    def log(self, values: dict, step: int) -> None:
        pass

    def finish(self) -> None:
        pass


class Trackers:
    """Every chosen backend, each an accelerate tracker, logged to together."""

    def __init__(self, trackers: list):
        self.trackers = trackers

    def log(self, values: dict, step: int) -> None:
        # Scalars only: the curves also hold ints and bools, and a tracker drops or rejects anything else.
        scalars = {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}
        for t in self.trackers:
            t.log(scalars, step=step)

    def finish(self) -> None:
        for t in self.trackers:
            t.finish()


def tracker(work: Path, name: str):
    """A tracker for one stage's own training loop: TensorBoard events under work/<name> (inside the stage's
    folder, which the cache keeps), a W&B run and an MLflow run named `name` (in the project/experiment given by
    WANDB_PROJECT / MLFLOW_EXPERIMENT_NAME, default "safealign"); a no-op when tracking is off."""
    names = report_to()
    if not names:
        return NoTracker()
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker
    work = Path(work)
    made = []
    for backend in names:
        if backend == "tensorboard":
            t = TensorBoardTracker(name, work)
        elif backend == "wandb":
            t = WandBTracker(os.environ.get("WANDB_PROJECT", "safealign"), name=name, dir=str(work))
        else:
            t = MLflowTracker(experiment_name="safealign", run_name=name)
        work.mkdir(parents=True, exist_ok=True)
        t.start()
        made.append(t)
    return Trackers(made)


def trainer_report_to(work: Path) -> list[str] | str:
    """`report_to` for a transformers/TRL trainer of the stage in `work`. Transformers 5.19 has no `logging_dir`
    argument: its TensorBoard callback reads TENSORBOARD_LOGGING_DIR when the Trainer is built (right after its
    arguments), else writes under output_dir, which `train_and_save` deletes; so the folder is set here, to
    work/tracking, which the stage keeps."""
    names = report_to()
    if "tensorboard" in names:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(work) / "tracking")
    return names or "none"
