"""The end of a run: summary.csv, copies of generations and judgments a user can open, a printed table and
the trade-off figure."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from safealign.eval.judges import oracle_metrics
from safealign.eval.winrate import win_rate
from safealign.stages import write_atomic

KIND_COLUMNS = {"helpfulness": "helpfulness_win_rate", "harmlessness": "harmlessness_win_rate"}


def summarize(gens: dict, judgments: dict, oracle: bool):
    """One row per model. SFT is the baseline, so its win rate against itself is 0.5 by definition and is
    not paid for with judge calls."""
    import pandas as pd
    rows = []
    for label in gens:
        row = {"method": label}
        for kind, col in KIND_COLUMNS.items():
            if label == "sft":
                row.update({col: 0.5, f"{col}_std": 0.0, f"{kind}_judgments": 0, f"{kind}_failures": 0})
                continue
            wr = win_rate([j for j in judgments[label] if j["kind"] == kind])
            row.update({col: wr["mean"], f"{col}_std": wr["std"], f"{kind}_judgments": wr["n"],
                        f"{kind}_failures": wr["failures"]})
        if oracle:
            row.update(oracle_columns(gens[label]))
        rows.append(row)
    return pd.DataFrame(rows)


def oracle_columns(gens: dict) -> dict:
    """Ground-truth figures of the tiny world: mean helpfulness on helpful prompts, the share of red-team
    answers that do harm, and the share of all answers the world recognises."""
    helpful = [oracle_metrics(g["prompt"], g["response"]) for g in gens["helpful"]]
    redteam = [oracle_metrics(g["prompt"], g["response"]) for g in gens["redteam"]]
    return {"oracle_helpfulness": statistics.fmean(m["helpfulness"] for m in helpful),
            "oracle_unsafe_share": statistics.fmean(m["harm"] > 0 for m in redteam),
            "oracle_recognised_share": statistics.fmean(m["recognised"] for m in helpful + redteam)}


def write_outputs(out: Path, summary, gens: dict, judgments: dict, log) -> None:
    write_atomic(out / "summary.csv", summary.to_csv(index=False))
    for label, sets in gens.items():
        for s, rows in sets.items():
            write_atomic(out / "generations" / f"{label}.{s}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    for label, rows in judgments.items():
        write_atomic(out / "judgments" / f"{label}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    from safealign.eval.plots import plot_tradeoff
    figs = plot_tradeoff(summary, out / "figures")
    log(f"summary -> {out / 'summary.csv'}; figures -> {', '.join(str(f) for f in figs)}")
    print(format_table(summary))


def format_table(summary) -> str:
    cols = [c for c in summary.columns if c == "method" or c.endswith("win_rate") or c.startswith("oracle_")]
    table = summary[cols].copy()
    for kind, col in KIND_COLUMNS.items():
        table[col] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(summary[col], summary[f"{col}_std"])]
    return table.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def load_summary(folder: Path):
    import pandas as pd
    from safealign import BenchError
    path = Path(folder) / "summary.csv"
    if not path.exists():
        raise BenchError(f"no summary.csv in {folder}: point at the --out folder of a finished `bench run`")
    return pd.read_csv(path)
