"""Training stages across processes and nodes with `accelerate launch` (DDP, FSDP full shard, DeepSpeed ZeRO-3).

A benchmark's [launch] section says how many processes a training stage gets and which accelerate config file
(one shipped in launch_configs/, or a path) they run under. The stage is then computed by
`accelerate launch --config_file <file> --num_processes N -m safealign.launch <job.json>`: every rank runs the
stage's own function on the same `work` folder (the stage store's partial folder, which every rank must see),
the TRL trainers find the process group accelerate set up, and only the main rank writes files
(methods/training.py train_and_save). The stage is finished by the process that launched it, after every rank
has exited with 0: a rank that dies leaves only the partial folder, which the next attempt resumes from.

How a stage is computed is runtime, not config: a stage trained on 8 GPUs has the same cache key as on one.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from safealign import BenchError

CONFIGS = Path(__file__).parent / "launch_configs"
# TRL's trainers (sft, align) run under accelerate as they are; the suite's own loops (score-model, rl) are DDP
# through accelerate, or shard themselves under the fsdp config (methods/sharding.py)
TRAINING_KINDS = ("sft", "align", "score-model", "rl")
OWN_LOOPS = ("score-model", "rl")


@dataclass
class LaunchConfig:
    processes: int = 1             # > 1: training stages run under `accelerate launch` with this many processes
    config: str = "ddp"            # ddp | fsdp | zero3 (launch_configs/<name>.yaml) or the path of an accelerate config
    kinds: list = field(default_factory=lambda: list(TRAINING_KINDS))
    extra_args: list = field(default_factory=list)     # more `accelerate launch` options (multi-node: --num_machines...)


def config_file(name: str) -> Path:
    shipped = CONFIGS / f"{name}.yaml"
    if shipped.exists():
        return shipped
    if Path(name).exists():
        return Path(name)
    names = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
    raise BenchError(f"[launch] config = '{name}': neither a shipped accelerate config ({names}) nor a file")


def check(cfg: LaunchConfig) -> LaunchConfig:
    """Every [launch] setting checked while planning: one line naming the key."""
    if cfg.processes < 1:
        raise BenchError(f"launch.processes = {cfg.processes}: give 1 (in this process) or more")
    bad = [k for k in cfg.kinds if k not in TRAINING_KINDS]
    if bad:
        raise BenchError(f"launch.kinds: '{bad[0]}' cannot run under accelerate launch; choose from "
                         f"{', '.join(TRAINING_KINDS)}")
    if cfg.processes > 1:
        config_file(cfg.config)
    return cfg


def command(cfg: LaunchConfig, job_file: Path) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file(cfg.config)),
            "--num_processes", str(cfg.processes), *map(str, cfg.extra_args), "-m", "safealign.launch", str(job_file)]


def run_launched(spec: dict, inputs: dict[str, str], root: Path, work: Path, log) -> None:
    """Compute one stage under accelerate launch into `work`; a non-zero exit is one line with its log's path."""
    cfg = LaunchConfig(**spec["runtime"]["launch"])
    work.mkdir(parents=True, exist_ok=True)
    job_file = work / "launch-job.json"
    job_file.write_text(json.dumps({"spec": spec, "inputs": inputs, "root": str(root), "work": str(work)}))
    out = work / "launch.log"
    log(f"stage {spec['label']}: accelerate launch, {cfg.processes} processes, {cfg.config}")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with open(out, "a") as f:
        code = subprocess.run(command(cfg, job_file), stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        raise BenchError(f"stage {spec['label']} failed under accelerate launch (exit {code}): see {out}; the "
                         "same command resumes it")
    job_file.unlink()
    main_log = work / "rank0.log"
    for line in main_log.read_text().splitlines() if main_log.exists() else []:
        log(line.split("] ", 1)[-1], echo=False)      # the main rank's step lines into the run's log


def main(argv: list[str]) -> None:
    """One rank: the stage's function on the shared work folder (safealign/plan.py Job)."""
    from safealign.plan import Job, call
    from safealign.stages import _ACTIVE, RunLog, Stage
    job = json.loads(Path(argv[0]).read_text())
    spec = job["spec"]
    inputs = {name: Stage(Path(p)) for name, p in job["inputs"].items()}
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    log = RunLog(Path(job["work"]) / f"rank{rank}.log", echo=False)
    log(f"rank {rank} of {world}: {spec['label']}")
    _ACTIVE.set((log, spec["label"]))                 # the trainer's per-step lines (main rank) go to its log
    call(spec["fn"])(Job(Path(job["work"]), spec["config"], inputs, spec["runtime"], Path(job["root"]), log))


if __name__ == "__main__":
    main(sys.argv[1:])

