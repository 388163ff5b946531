"""Executors run a planned graph (safealign/plan.py). `local`: one stage after another in this process.
`ray`: every stage whose inputs are finished runs as a Ray task with the CPUs and GPUs its spec asks for, on this
machine (`ray.init()`) or a cluster (`--address`); the stage store must be a path every worker sees.

Either way a stage is built in `<key>.partial/` and renamed into place (safealign/stages.py), so a worker killed
mid-stage leaves no finished-looking stage; Ray retries the task (max_retries counts worker deaths, not errors
raised by the stage) and the retry resumes from the partial folder.
"""
from __future__ import annotations

import os
from pathlib import Path

from safealign import BenchError
from safealign.plan import Graph, compute, is_done, shipped
from safealign.stages import RunLog, Stage, Store

EXECUTORS = ("local", "ray")
RETRIES = 2                     # a stage whose worker dies is tried this many more times
FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM")   # besides SAFEALIGN_*; never API keys


def execute(graph: Graph, store: Store, executor: str = "local", address: str | None = None) -> dict[str, Stage]:
    """{key: finished stage} for every spec of the graph."""
    if executor == "local":
        return {spec.key: compute(shipped(spec), _paths(graph, spec, store), store) for spec in graph}
    if executor == "ray":
        return _execute_ray(graph, store, address)
    raise BenchError(f"unknown executor '{executor}': choose one of {', '.join(EXECUTORS)}")


def _paths(graph: Graph, spec, store: Store) -> dict[str, str]:
    return {name: str(p) for name, p in graph.inputs(spec, store.root).items()}


def _ray_task(spec: dict, input_paths: dict, root: str, log_path: str | None) -> str:
    """One stage inside a Ray worker: its own Store on the shared path, logging to the run's log file."""
    store = Store(Path(root), RunLog(Path(log_path) if log_path else None))
    return str(compute(spec, input_paths, store).path)


def _execute_ray(graph: Graph, store: Store, address: str | None) -> dict[str, Stage]:
    try:
        import ray
    except ImportError:
        raise BenchError("--executor ray needs Ray: pip install 'ray[default]'") from None
    started = not ray.is_initialized()
    if started:
        env = {k: v for k, v in os.environ.items() if k.startswith("SAFEALIGN_") or k in FORWARDED_ENV}
        ray.init(address=address, runtime_env={"env_vars": env}, include_dashboard=False, log_to_driver=True)
    task = ray.remote(max_retries=RETRIES)(_ray_task)
    done = {spec.key: Stage(spec.path(store.root)) for spec in graph if is_done(spec, store.root)}
    for spec in graph:
        if spec.key in done:
            store.log(f"stage {spec.label} [{spec.kind}/{spec.key}] cached")
            store.cached.append(spec.label)
    waiting = [spec for spec in graph if spec.key not in done]
    running: dict = {}
    log_path = str(store.log.path) if store.log.path else None
    try:
        while waiting or running:
            ready = [s for s in waiting if all(k in done for k in s.inputs.values())]
            for spec in ready:
                waiting.remove(spec)
                ref = task.options(num_cpus=spec.resources["cpus"], num_gpus=spec.resources["gpus"]).remote(
                    shipped(spec), _paths(graph, spec, store), str(store.root), log_path)
                running[ref] = spec
            finished, _ = ray.wait(list(running), num_returns=1)
            for ref in finished:
                spec = running.pop(ref)
                done[spec.key] = Stage(Path(_result(ray, ref)))
                store.computed.append(spec.label)
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
    return done


def _result(ray, ref) -> str:
    """The task's result; a stage's own error (a BenchError) comes back as itself, not wrapped by Ray."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, BenchError):
            raise BenchError(str(cause)) from None
        raise
