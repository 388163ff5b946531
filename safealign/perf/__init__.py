"""`bench perf`: the suite's speed figures, each measured side by side with what it is compared to and printed
beside its goal. Every figure is one function `measure(quick: bool) -> dict` in a module of this package, named
in FIGURES; the dict has:

    figure  short name            value   the measured figure (a float)
    unit    e.g. "x sequential"   goal    the goal as text, e.g. ">= 20x"
    ok      goal met (bool)       detail  one line of the raw timings behind the value

`quick` runs a smaller case (for tests); the README's table comes from the full one."""
from __future__ import annotations

FIGURES = {
    "sweep-sharing": "safealign.perf.train:sweep_sharing",
    "dpo-vs-trl": "safealign.perf.train:dpo_vs_trl",
    "judge-throughput": "safealign.perf.judge:throughput",
    "generation": "safealign.perf.generation:vllm_vs_hf",
    "end-to-end": "safealign.perf.e2e:tiny_all_methods",
}

import json
import os
import platform
import time
from pathlib import Path

from safealign import BenchError


def machine() -> dict:
    """What the figures were measured on: they mean little without it."""
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu or "none", "python": platform.python_version(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}


def run_figures(names: list[str], quick: bool, out: Path) -> str:
    """Measure each named figure, save perf.json (figures + machine) under `out`, return the printed table."""
    from safealign.plan import call
    from safealign.stages import write_atomic
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise BenchError(f"unknown perf figure '{unknown[0]}': choose from {', '.join(FIGURES)}")
    record = {"machine": machine(), "quick": quick, "figures": []}
    for name in names:
        print(f"measuring {name} ...", flush=True)
        record["figures"].append({"name": name, **call(FIGURES[name])(quick)})
        # saved after each figure: a long `bench perf` stopped late keeps what it measured
        write_atomic(Path(out) / "perf.json", json.dumps(record, indent=2, default=str))
        print(format_figures({**record, "figures": record["figures"][-1:]}).splitlines()[-1], flush=True)
    return format_figures(record) + f"\n-> {Path(out) / 'perf.json'}"


def format_figures(record: dict) -> str:
    m = record["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, GPU {m['gpu']}, torch {m['torch']} ({m['date']})"
             + (" [quick cases]" if record.get("quick") else ""),
             f"{'figure':<32} {'value':>9} {'unit':<18} {'goal':<12} {'met':<4} detail"]
    for r in record["figures"]:
        met = "yes" if r["ok"] else "NO"
        lines.append(f"{r['figure']:<32} {r['value']:>9.3g} {r['unit']:<18} {r['goal']:<12} {met:<4} {r['detail']}")
    return "\n".join(lines)
