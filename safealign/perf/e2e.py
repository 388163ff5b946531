"""End to end: `bench run --benchmark tiny` with every registered method on a fresh cache, as a user runs it, in
a subprocess whose whole process tree (Ray workers included) is sampled for memory."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

GOAL_MINUTES = 10.0


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes (0 once it is gone)."""
    import psutil
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def timed_run(argv: list[str], env: dict | None = None) -> tuple[float, int, subprocess.CompletedProcess]:
    """(wall seconds, peak tree RSS bytes sampled every 0.5 s, the finished process) of the command `argv`."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak, start = [0], time.time()

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.5)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.time() - start
    sampler.join()
    return wall, peak[0], subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def tiny_all_methods(quick: bool) -> dict:
    from safealign.registry import METHODS
    executor = os.environ.get("SAFEALIGN_PERF_EXECUTOR", "local")
    methods = "sft,dpo-h" if quick else ",".join(METHODS)
    extra = ["--limit", "32", "--set", "sft.epochs=1", "--set", "train.epochs=1"] if quick else []
    with tempfile.TemporaryDirectory() as tmp:
        wall, peak, proc = timed_run([sys.executable, "-m", "safealign.cli", "run", "--benchmark", "tiny",
                                      "--methods", methods, "--executor", executor, "--cache", str(Path(tmp) / "cache"),
                                      "--out", str(Path(tmp) / "out"), *extra])
        by_kind = stage_seconds(Path(tmp) / "cache")
    if proc.returncode != 0:
        raise RuntimeError(f"the tiny run failed: {proc.stderr[-2000:]}")
    minutes = wall / 60
    where = ", ".join(f"{kind} {s / 60:.1f} min ({n})" for kind, (n, s) in
                      sorted(by_kind.items(), key=lambda kv: -kv[1][1])[:5])
    return {"figure": "tiny, every method, end to end", "value": minutes, "unit": "minutes", "goal": f"< {GOAL_MINUTES:g}",
            "ok": minutes < GOAL_MINUTES, "detail": f"{len(methods.split(','))} methods, executor {executor}, "
            f"peak memory {peak / 2**30:.2f} GiB (process tree); stage time by kind: {where}"}


def stage_seconds(cache: Path) -> dict[str, tuple[int, float]]:
    """{kind: (stages, seconds)} of the stages a run computed into `cache` (their stage.json records)."""
    import json
    out: dict[str, tuple[int, float]] = {}
    for record in cache.glob("*/*/stage.json"):
        r = json.loads(record.read_text())
        n, s = out.get(r["stage"], (0, 0.0))
        out[r["stage"]] = (n + 1, s + float(r.get("seconds", 0.0)))
    return out
