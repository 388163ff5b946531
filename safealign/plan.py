"""A run planned before it runs: a graph of stage specs, plain data an executor can ship anywhere.

A spec names its kind, the function that computes it ("module:function", called as fn(job)), the config that
function receives, its inputs (other specs, by key) and the resources it asks for. Its cache key hashes exactly
the kind, the config and the input keys (stages.stage_key), so two methods that plan the same stage (DPO(H) under
dpo-h, sacpo and psacpo) plan it once. `runtime` carries how a stage is computed, never what it computes
(a judge's concurrency, a progress label's seed), and is not hashed.
"""
from __future__ import annotations

import importlib
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safealign.stages import Stage, Store, stage_key

DEFAULT_RESOURCES = {"cpus": 1, "gpus": 0}


@dataclass
class Spec:
    kind: str
    fn: str
    config: dict
    inputs: dict[str, str]                     # input name -> key of another spec of the graph
    label: str
    resources: dict = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    runtime: dict = field(default_factory=dict)
    key: str = ""

    def __post_init__(self):
        self.key = stage_key(self.kind, self.config, self.inputs)

    def path(self, root: Path) -> Path:
        return Path(root) / self.kind / self.key


@dataclass
class Job:
    """What a stage function receives: where to write, its config, its finished inputs, how to run."""
    work: Path
    config: dict
    inputs: dict[str, Stage]
    runtime: dict
    root: Path                                 # the stage store (caches shared across stages, e.g. judge calls)
    log: object = print                        # the run log (RunLog): lines a user should see


class Graph:
    """Specs by key in the order they were planned; a spec's inputs are always planned before it."""

    def __init__(self):
        self.specs: dict[str, Spec] = {}

    def add(self, spec: Spec) -> Spec:
        return self.specs.setdefault(spec.key, spec)

    def __iter__(self):
        return iter(self.specs.values())

    def __len__(self) -> int:
        return len(self.specs)

    def inputs(self, spec: Spec, root: Path) -> dict[str, Path]:
        return {name: self.specs[key].path(root) for name, key in spec.inputs.items()}


def call(target: str):
    module, fn = target.split(":")
    return getattr(importlib.import_module(module), fn)


def compute(spec: dict, input_paths: dict[str, str], store: Store) -> Stage:
    """Compute one spec (as a plain dict, as an executor ships it) into the store, or find it finished."""
    inputs = {name: Stage(Path(p)) for name, p in input_paths.items()}
    fn = call(spec["fn"])

    def work(path: Path) -> None:
        if spec["runtime"].get("launch"):          # every rank runs fn; this process finishes the stage
            from safealign.launch import run_launched
            run_launched(spec, input_paths, store.root, path, store.log)
        else:
            fn(Job(path, spec["config"], inputs, spec["runtime"], store.root, store.log))
    return store.compute(spec["kind"], spec["key"], spec["config"], inputs, work, spec["label"])


def is_done(spec: Spec, root: Path) -> bool:
    return (spec.path(root) / "stage.json").exists()


def shipped(spec: Spec) -> dict:
    return asdict(spec)


# -- reading the plan -----------------------------------------------------------------------------------------
def past_timings(root: Path) -> dict:
    """Seconds of every stage the store has computed before: {(kind, method): [s]} and {(kind, None): [s]}."""
    out: dict = {}
    for record in Path(root).glob("*/*/stage.json"):
        try:
            r = json.loads(record.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for k in ((r["stage"], _method(r.get("label", ""))), (r["stage"], None)):
            out.setdefault(k, []).append(float(r.get("seconds", 0.0)))
    return out


def _method(label: str) -> str:
    """'sacpo@0.05 seed 2' -> 'sacpo': what a stage's time mostly depends on besides its kind."""
    return label.split(" seed ")[0].split("@")[0].replace("generate ", "").replace("judge ", "").split("/")[0]


def estimate(spec: Spec, timings: dict) -> float | None:
    """The median time of earlier stages of the same kind and method, else of the same kind, else None."""
    for k in ((spec.kind, _method(spec.label)), (spec.kind, None)):
        if timings.get(k):
            return statistics.median(timings[k])
    return None


def status(spec: Spec, root: Path) -> str:
    if is_done(spec, root):
        return "cached"
    partial = spec.path(root).with_name(f"{spec.key}.partial")
    return "resume" if partial.exists() and any(partial.iterdir()) else "run"


def describe(run) -> str:
    """`bench run --dry-run`: every stage with its status and estimated time, totals per kind, and the judge calls
    the plan will make with their estimated cost."""
    root, timings = run.store.root, past_timings(run.store.root)
    lines = [f"{'kind':<12} {'stage':<46} {'status':<7} {'est.':>7}  key"]
    per_kind: dict = {}
    for spec in run.graph:
        st = status(spec, root)
        est = None if st == "cached" else estimate(spec, timings)
        launch = spec.runtime.get("launch")
        how = f"  accelerate launch, {launch['processes']} processes, {launch['config']}" if launch else ""
        lines.append(f"{spec.kind:<12} {spec.label[:46]:<46} {st:<7} {_seconds(est):>7}  {spec.key}{how}")
        k = per_kind.setdefault(spec.kind, {"cached": 0, "to run": 0, "seconds": 0.0, "unknown": 0})
        k["cached" if st == "cached" else "to run"] += 1
        k["seconds"] += est or 0.0
        k["unknown"] += st != "cached" and est is None
    lines += ["", f"{'kind':<12} {'cached':>6} {'to run':>6} {'est.':>8}  (from {sum(map(len, timings.values())) // 2} "
                  "earlier stages of this store)"]
    for kind, k in per_kind.items():
        note = f"  {k['unknown']} without an estimate" if k["unknown"] else ""
        lines.append(f"{kind:<12} {k['cached']:>6} {k['to run']:>6} {_seconds(k['seconds']):>8}{note}")
    todo = sum(k["seconds"] for k in per_kind.values())
    lines.append(f"{'total':<12} {sum(k['cached'] for k in per_kind.values()):>6} "
                 f"{sum(k['to run'] for k in per_kind.values()):>6} {_seconds(todo):>8}  (one stage at a time)")
    lines.append(_judge_line(run))
    return "\n".join(lines)


def _judge_line(run) -> str:
    """Comparisons of the judge stages still to run and their estimated cost (an upper bound: answers already in
    the judge's call cache are free)."""
    specs = [s for s in run.judge_specs.values() if status(s, run.store.root) != "cached"]
    counts = prompt_counts(run)
    if counts is None:
        return f"judging: {len(specs)} stages to run; comparisons unknown until the data stage is built"
    n = len(specs) * sum(counts.values()) * 2 * run.repetitions          # both orders, every round
    answer_tokens = int(run.config.get("generation", {}).get("max_new_tokens", 512))
    cost = run.judge_impl.estimate_cost(n, answer_tokens)
    return (f"judging: {len(specs)} stages to run, {n} comparisons ({counts} prompts x 2 orders x "
            f"{run.repetitions} rounds each) with judge '{run.typed['judge'].name}': est. cost ${cost:.2f}")


def prompt_counts(run) -> dict | None:
    """Prompts per evaluation set, reading the data stage; an offline generated world is built for it (instant),
    downloaded data only when it is cached already."""
    from safealign.pipeline import PROMPT_SETS, data_rows
    data = run.data_stage
    if not is_done(data, run.store.root):
        if data.kind not in ("world", "exact"):
            return None
        compute(shipped(data), {}, run.store)
    stage = Stage(data.path(run.store.root))
    return {s: len(data_rows(stage, f"{s}_eval", run.limit)) for s in PROMPT_SETS}


def _seconds(s: float | None) -> str:
    if s is None:
        return "?"
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.1f}m" if s < 7200 else f"{s / 3600:.1f}h"
