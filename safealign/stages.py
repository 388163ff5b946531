"""Content-addressed stage store: every stage's output lives under a hash of its config and inputs.

A stage is done when its folder exists: it is built in `<key>.partial/` and renamed into place, and a
rename is atomic, so a killed run never leaves a half-written stage that looks finished. The partial
folder is kept across a kill so that a stage can resume its own work (trainer checkpoints, generations
already written).
"""
from __future__ import annotations

import hashlib
import contextvars
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable


# Part of every stage key: bump it when a change to the code changes what a stage computes, so that old
# cached results are not taken for new ones.
CODE_VERSION = 2
# Per kind of stage, bumped when only that kind's code changes, so other kinds' cached results stay valid.
STAGE_VERSIONS = {"score-model": 2, "rl": 2, "generate": 2}


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_atomic(path: Path, text: str) -> None:
    """Write a whole file or nothing: a temporary file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_jsonl(path: Path, rows) -> None:
    """A whole JSONL file, one row per line, written atomically."""
    write_atomic(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file ([] when it does not exist), up to a line torn by a kill."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break           # a line cut by a kill: everything after it is rewritten
    return rows


class RunLog:
    """Appends one line per event to <out>/run.log and echoes it, so a user and a test can read it."""

    def __init__(self, path: Path | None, echo: bool = True):
        self.path, self.echo = path, echo

    def __call__(self, msg: str, echo: bool = True) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        if self.echo and echo:
            print(line, flush=True)
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(line + "\n")


# The stage being computed and the run log it reports to, so that a trainer deep inside a stage can write its
# per-step figures to run.log (not the terminal) without every function passing the log along.
_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("active_stage", default=(None, ""))


def stage_log(msg: str) -> None:
    """A line in the run log of the stage being computed, not echoed to the terminal."""
    log, label = _ACTIVE.get()
    if log is not None:
        log(f"{label}: {msg}", echo=False)


def stage_label() -> str:
    return _ACTIVE.get()[1]


class Stage:
    """A finished stage: its folder, its key, and the record saved beside its output."""

    def __init__(self, path: Path):
        self.path = path
        self.key = path.name
        self.record = json.loads((path / "stage.json").read_text())

    @property
    def model(self) -> Path | str:
        """The checkpoint this stage stands for: its model/ folder, or the hub id or path it points at."""
        own = self.path / "model"
        return own if own.exists() else self.record["config"]["source"]

    def __truediv__(self, other: str) -> Path:
        return self.path / other


class Store:
    def __init__(self, root: Path, log: RunLog):
        self.root, self.log = Path(root), log
        self.computed: list[str] = []
        self.cached: list[str] = []
        self.tag = ""          # appended to stage labels in the log, e.g. " seed 2" while building seed 2's models

    def key(self, name: str, config: dict, inputs: dict[str, Stage]) -> str:
        return stage_key(name, config, {k: v.key for k, v in inputs.items()})

    def run(self, name: str, config: dict, inputs: dict[str, Stage], fn: Callable[[Path], None],
            label: str | None = None) -> Stage:
        """Return the finished stage, computing it with fn(work_dir) only when it is not already done."""
        return self.compute(name, self.key(name, config, inputs), config, inputs, fn, label)

    def compute(self, name: str, key: str, config: dict, inputs: dict[str, Stage], fn: Callable[[Path], None],
                label: str | None = None) -> Stage:
        """The stage `name/key`: found finished, or built by fn(work) in `<key>.partial/` and renamed into place."""
        label = (label or name) + self.tag
        final = self.root / name / key
        if (final / "stage.json").exists():
            self.log(f"stage {label} [{name}/{key}] cached")
            self.cached.append(label)
            return Stage(final)
        work = self.root / name / f"{key}.partial"
        resumed = work.exists() and any(work.iterdir())
        work.mkdir(parents=True, exist_ok=True)
        self.log(f"stage {label} [{name}/{key}] {'resuming' if resumed else 'running'}")
        start = time.time()
        token = _ACTIVE.set((self.log, label))
        try:
            fn(work)
        finally:
            _ACTIVE.reset(token)
        record = {"stage": name, "label": label, "key": key, "config": config,
                  "inputs": {k: str(v.path) for k, v in inputs.items()}, "seconds": round(time.time() - start, 2)}
        write_atomic(work / "stage.json", json.dumps(record, indent=2, default=str))
        if final.exists():          # an unfinished leftover of an older layout; the new result wins
            shutil.rmtree(final)
        os.replace(work, final)
        self.log(f"stage {label} [{name}/{key}] computed in {record['seconds']:.1f}s")
        self.computed.append(label)
        return Stage(final)


def stage_key(name: str, config: dict, input_keys: dict[str, str]) -> str:
    """A stage's identity: its kind, the config its function receives, and the keys of its inputs."""
    return digest({"stage": name, "config": config, "inputs": input_keys, "code": CODE_VERSION,
                   **({"version": STAGE_VERSIONS[name]} if name in STAGE_VERSIONS else {})})
