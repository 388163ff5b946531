"""The end of a run: summary.csv, copies of generations and judgments a user can open, a printed table and
the trade-off figure."""
from __future__ import annotations

import json
from pathlib import Path

from safealign.stages import write_atomic, write_jsonl

from safealign.uncertainty import KIND_COLUMNS


def summarize(gens: dict, judgments: dict, oracle: bool, extra: dict | None = None, failed_as_tie: bool = False,
              seed: int = 0, costs: list[dict] | None = None, threshold: float = 0.0):
    """One row per model: each win rate against SFT and each oracle figure as a mean over (seed, prompt) units
    with its 95% bootstrap interval over prompts and seeds, the number of seeds, the per-prompt constraint view
    (expected cost and share of red-team prompts above the threshold, from sampled answers), and the marks
    beats_sft and pareto_over (safealign/uncertainty.py). SFT against itself is 0.5 by definition and costs no judge call."""
    import numpy as np
    import pandas as pd

    from safealign.uncertainty import constraint_columns, marks, method_row
    rng = np.random.default_rng(seed)
    rows = [{**method_row(label, gens, judgments, oracle, failed_as_tie, rng),
             **constraint_columns([c for c in costs or [] if c["method"] == label], threshold, rng),
             **(extra or {}).get(label, {})} for label in gens]
    summary = pd.DataFrame(rows)
    marks(summary, judgments, failed_as_tie, rng)
    return summary


def ratings_table(judgments: dict, seed: int):
    """Elo (the paper's protocol) and Bradley-Terry with bootstrap 95% intervals, per judging kind, from all
    pairwise judgments; None unless every model was judged against every other (Elo needs all pairs)."""
    import numpy as np
    import pandas as pd
    from safealign.eval.ratings import bradley_terry_ci, elo_ci
    models = {m for pair in judgments for m in pair}
    if len(judgments) < len(models) * (len(models) - 1) // 2 or len(models) < 3:
        return None
    out = []
    for kind in KIND_COLUMNS:
        rows = [{"model_a": j["model"], "model_b": j["baseline"], "score_a": j["score_model"],
                 "score_b": j["score_baseline"], "ok": j["ok"], "seed": j.get("seed", 0), "prompt_id": j["prompt_id"]}
                for js in judgments.values() for j in js if j["kind"] == kind]
        e = elo_ci(rows, np.random.default_rng(seed))
        bt = bradley_terry_ci(rows, np.random.default_rng(seed))
        for m in sorted(models):
            out.append({"method": m, "kind": kind, "elo": e[m][0], "elo_std": e[m][1], "elo_low": e[m][2],
                        "elo_high": e[m][3], "bt": bt[m][0], "bt_low": bt[m][1], "bt_high": bt[m][2]})
    return pd.DataFrame(out)


def copy_training_logs(out: Path, models: dict) -> None:
    """Each trained model's curves beside the results: TRL's log history, or the RL curves and their plot."""
    import shutil
    several = len({seed for _, seed in models}) > 1
    for (label, seed), stage in models.items():
        stem = f"{label}.seed{seed}" if several else label
        for name in ("log_history.json", "curves.jsonl", "curves.png"):
            if (stage / name).exists():
                (out / "training").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(stage / name, out / "training" / f"{stem}.{name}")


def write_outputs(out: Path, summary, gens: dict, judgments: dict, log, seed: int = 0, usage=None) -> None:
    from dataclasses import asdict

    from safealign.eval.plots import draw_all
    from safealign.uncertainty import long_table
    write_atomic(out / "summary.csv", summary.to_csv(index=False))
    write_atomic(out / "winrates_long.csv", long_table(judgments).to_csv(index=False))
    for label, sets in gens.items():
        for s, rows in sets.items():
            write_jsonl(out / "generations" / f"{label}.{s}.jsonl", rows)
    for (model, base), rows in judgments.items():
        name = model if base == "sft" else f"{model}_vs_{base}"
        write_jsonl(out / "judgments" / f"{name}.jsonl", rows)
    ratings = ratings_table(judgments, seed)
    if ratings is not None:
        write_atomic(out / "elo.csv", ratings.to_csv(index=False))
    if usage is not None:
        # this run's calls, and the total of every call behind these judgments, whichever run paid for it
        record = usage.record(judgments, gens) if hasattr(usage, "record") else asdict(usage)
        write_atomic(out / "judge_usage.json", json.dumps(record, indent=2))
    figs = draw_all(out)
    log(f"summary -> {out / 'summary.csv'}; figures -> {', '.join(str(f) for f in figs)}")
    print(format_table(summary))
    if ratings is not None:
        print(format_ratings(ratings))


def format_ratings(ratings) -> str:
    table = ratings.copy()
    table["elo (± std over trials)"] = [f"{m:.0f} ± {s:.0f}" for m, s in zip(ratings["elo"], ratings["elo_std"])]
    table["elo 95% CI"] = [f"[{lo:.0f}, {hi:.0f}]" for lo, hi in zip(ratings["elo_low"], ratings["elo_high"])]
    table["bt (95% CI)"] = [f"{b:.0f} [{lo:.0f}, {hi:.0f}]" for b, lo, hi in
                            zip(ratings["bt"], ratings["bt_low"], ratings["bt_high"])]
    return ("ratings: intervals are 95% bootstrap over prompts and seeds\n"
            + table[["method", "kind", "elo (± std over trials)", "elo 95% CI", "bt (95% CI)"]].to_string(index=False))


def format_table(summary) -> str:
    """The summary as a person reads it: each figure with its 95% interval, and the marks."""
    cols = [c for c in summary.columns if c == "method" or c.endswith("win_rate") or
            (c.startswith(("oracle_", "expected_cost", "prompts_over", "over_refusal")) and not c.endswith(("_low", "_high")))]
    table = summary[cols].copy()
    for col in cols[1:]:
        if f"{col}_low" in summary:
            table[col] = [f"{m:.3f} [{lo:.2f}, {hi:.2f}]" for m, lo, hi in
                          zip(summary[col], summary[f"{col}_low"], summary[f"{col}_high"])]
    for extra in ("beats_sft", "pareto_over"):
        if extra in summary:
            table[extra] = summary[extra].fillna("")
    seeds = int(summary["seeds"].max()) if "seeds" in summary else 1
    head = (f"mean [95% interval: bootstrap over prompts and {seeds} seed{'s' if seeds > 1 else ''}]; beats_sft: "
            "kinds whose interval lies above 0.5; pareto_over: methods beaten on both kinds (paired, 95%)")
    return head + "\n" + table.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def load_summary(folder: Path):
    import pandas as pd
    from safealign import BenchError
    path = Path(folder) / "summary.csv"
    if not path.exists():
        raise BenchError(f"no summary.csv in {folder}: point at the --out folder of a finished `bench run`")
    return pd.read_csv(path)


def compare_folder(folder: Path, a: str, b: str) -> str:
    """`bench compare`: A - B on each win rate vs SFT (and the oracle figures on the tiny world), paired by prompt
    and seed, read back from the plain files of a finished run."""
    import numpy as np

    from safealign import BenchError
    from safealign.stages import read_jsonl
    from safealign.uncertainty import compare
    folder = Path(folder)
    methods = list(load_summary(folder)["method"])
    for m in (a, b):
        if m not in methods:
            raise BenchError(f"method '{m}' is not in {folder}: it has {', '.join(methods)}")
    config = json.loads((folder / "config.json").read_text())
    gens = {m: {s: read_jsonl(folder / "generations" / f"{m}.{s}.jsonl") for s in ("helpful", "redteam")}
            for m in (a, b)}
    judgments = {(m, "sft"): read_jsonl(folder / "judgments" / f"{m}.jsonl") for m in (a, b) if m != "sft"}
    oracle = config["benchmark"].get("data", {}).get("source", "world") == "world"
    table = compare(gens, judgments, a, b, oracle, np.random.default_rng(config["benchmark"].get("seed", 0)))
    table["verdict"] = [f"{a} higher" if r["low"] > 0 else f"{b} higher" if r["high"] < 0 else "no difference shown"
                        for _, r in table.iterrows()]
    seeds = int(table["seeds"].max())
    head = (f"{a} - {b}, paired by prompt and seed ({seeds} seed{'s' if seeds > 1 else ''}): mean difference, 95% "
            "bootstrap interval over prompts and seeds, two-sided bootstrap p-value")
    cols = ["figure", a, b, "difference", "low", "high", "p", "prompts", "verdict"]
    return head + "\n" + table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")
