"""Figures from a results folder: the trade-off of all models, the paper's Figure 2 (three panels of win rates
vs SFT) and Figure 3 (Elo). `paper=True` overlays the paper's published points (SACPO Table 3) as hollow
markers, so a reproduction can be read against the original at a glance."""
from __future__ import annotations

from pathlib import Path

PANELS = [  # (title, families drawn as labelled lines, one-step methods drawn as points)
    ("(a) helpfulness first", ["sacpo", "sacpo-dpo-kto", "sacpo-kto-dpo"], ["dpo-h", "kto-h"]),
    ("(b) safety first", ["sacpo-s-first"], ["dpo-s"]),
    ("(c) merging", ["psacpo", "naive-merge"], ["dpo-h", "dpo-s"]),
]
NAMES = {"sacpo": "DPO(H)→DPO(S)", "sacpo-dpo-kto": "DPO(H)→KTO(S)", "sacpo-kto-dpo": "KTO(H)→DPO(S)",
         "sacpo-s-first": "DPO(S)→DPO(H)", "psacpo": "P-SACPO", "naive-merge": "naive merging",
         "dpo-h": "DPO(H)", "kto-h": "KTO(H)", "dpo-s": "DPO(S)", "saferlhf": "Safe RLHF", "repo": "RePO", "sft": "SFT"}
CROSSES = ("sft", "saferlhf", "repo")
# one colour per method family, the same in every panel
COLORS = {"sacpo": "tab:blue", "sacpo-dpo-kto": "tab:orange", "sacpo-kto-dpo": "tab:green",
          "sacpo-s-first": "tab:purple", "psacpo": "tab:blue", "naive-merge": "tab:brown",
          "dpo-h": "tab:olive", "kto-h": "tab:cyan", "dpo-s": "tab:pink"}
X, Y = "helpfulness_win_rate", "harmlessness_win_rate"


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def split(label: str) -> tuple[str, float | None]:
    family, _, point = label.partition("@")
    return family, float(point) if point else None


def paper_points():
    import pandas as pd
    from importlib import resources
    with resources.files("safealign.eval").joinpath("paper_points.csv").open() as f:
        return pd.read_csv(f)


def _save(fig, folder: Path, stem: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.png", folder / f"{stem}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    _plt().close(fig)
    return paths


def _axes_style(ax, title: str) -> None:
    ax.axhline(0.5, color="0.85", lw=1, zorder=0)
    ax.axvline(0.5, color="0.85", lw=1, zorder=0)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("helpfulness win rate vs SFT")
    ax.set_ylabel("harmlessness win rate vs SFT")
    ax.set_title(title)
    ax.grid(alpha=0.3)


def plot_tradeoff(summary, folder: Path) -> list[Path]:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 5.5))
    _axes_style(ax, "Helpfulness vs harmlessness (up and right is better)")
    for _, row in summary.iterrows():
        cross = split(row["method"])[0] in CROSSES
        ax.errorbar([row[X]], [row[Y]], xerr=err(row, X), yerr=err(row, Y),
                    fmt="x" if cross else "o", color="black" if cross else None, ms=8 if cross else 6, capsize=3)
        ax.annotate(row["method"], (row[X], row[Y]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    return _save(fig, folder, "tradeoff")


def err(row, col: str):
    """Error-bar lengths [[below], [above]] from the figure's 95% interval (a zero bar where it has none)."""
    if f"{col}_low" not in row:
        return [[0.0], [0.0]]
    return [[max(row[col] - row[f"{col}_low"], 0.0)], [max(row[f"{col}_high"] - row[col], 0.0)]]


def per_seed_points(folder: Path):
    """{method: (x, y) per seed}: each seed's win rates (mean over judge rounds), from winrates_long.csv."""
    import pandas as pd
    path = folder / "winrates_long.csv"
    if not path.exists():
        return {}
    long = pd.read_csv(path).groupby(["method", "seed", "kind"])["win_rate"].mean().unstack("kind")
    return {m: (part["helpfulness"].tolist(), part["harmlessness"].tolist())
            for m, part in long.groupby(level="method") if {"helpfulness", "harmlessness"} <= set(part)}


def plot_figure2(summary, folder: Path, paper: bool = False, seeds: dict | None = None) -> list[Path]:
    """Three panels as in the paper's Figure 2: each family a line through its sweep, points labelled by
    beta/lambda or q, with their 95% intervals in both directions; SFT and the RL baselines as crosses; the
    paper's points hollow when `paper`; each seed's own point as a faint dot when `seeds` is given."""
    plt = _plt()
    ref = paper_points() if paper else None
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    rows = {r["method"]: r for _, r in summary.iterrows()}
    for ax, (title, families, singles) in zip(axes, PANELS):
        _axes_style(ax, title)
        for family in families + singles:
            color = COLORS.get(family, "tab:gray")
            ours = sorted((split(m)[1] or 0.0, rows[m]) for m in rows if split(m)[0] == family)
            if ours:
                xs, ys = [r[X] for _, r in ours], [r[Y] for _, r in ours]
                ax.plot(xs, ys, "-o" if family in families else "s", color=color, label=NAMES.get(family, family))
                for _, r in ours:
                    ax.errorbar([r[X]], [r[Y]], xerr=err(r, X), yerr=err(r, Y), fmt="none", ecolor=color,
                                alpha=0.5, capsize=2, lw=1)
                    for sx, sy in zip(*(seeds or {}).get(r["method"], ([], []))):
                        ax.scatter([sx], [sy], s=10, color=color, alpha=0.35)
                for point, r in ours:
                    if split(r["method"])[1] is not None:
                        ax.annotate(f"{point:g}", (r[X], r[Y]), textcoords="offset points", xytext=(4, 4), fontsize=8)
            if ref is not None:
                theirs = ref[[split(m)[0] == family for m in ref["method"]]]
                ax.scatter(theirs[X], theirs[Y], facecolors="none", edgecolors=color, s=45,
                           label=f"{NAMES.get(family, family)} (paper)" if len(theirs) else None)
        for i, name in enumerate(CROSSES):
            for m, r in rows.items():
                if split(m)[0] == name:
                    ax.scatter([r[X]], [r[Y]], marker="x", s=70, color="black" if name == "sft" else "tab:red")
                    ax.errorbar([r[X]], [r[Y]], xerr=err(r, X), yerr=err(r, Y), fmt="none", capsize=2, lw=1,
                                ecolor="black" if name == "sft" else "tab:red", alpha=0.5)
                    # staggered so that baselines landing on the same spot stay readable
                    ax.annotate(NAMES.get(name, name), (r[X], r[Y]), textcoords="offset points",
                                xytext=(-40 if i else 5, -10 - 10 * i), fontsize=8)
        if ref is not None:
            for _, r in ref[ref["method"] == "saferlhf"].iterrows():
                ax.scatter([r[X]], [r[Y]], marker="X", s=70, facecolors="none", edgecolors="tab:red",
                           label="Safe RLHF (paper)")
        if ax.get_legend_handles_labels()[0]:       # a panel with none of its methods in this run has no legend
            ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("Win rate vs SFT" + (" (hollow: SACPO paper, Table 3)" if paper else ""))
    fig.tight_layout()
    return _save(fig, folder, "figure2")


def plot_figure3(ratings, folder: Path) -> list[Path]:
    """Elo per model and kind (the paper's Figure 3), SFT anchored at 1000; whiskers show the 95% interval over
    prompts and seeds where the ratings table has one, else the std over trials."""
    plt = _plt()
    kinds = list(dict.fromkeys(ratings["kind"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 0.35 * ratings["method"].nunique() + 1.8))
    for ax, kind in zip(axes if len(kinds) > 1 else [axes], kinds):
        part = ratings[ratings["kind"] == kind].sort_values("elo")
        colors = ["black" if m == "sft" else "tab:blue" for m in part["method"]]
        if "elo_low" in part:
            xerr = [(part["elo"] - part["elo_low"]).clip(lower=0), (part["elo_high"] - part["elo"]).clip(lower=0)]
        else:
            xerr = [part["elo_std"], part["elo_std"]]
        ax.barh(part["method"], part["elo"], xerr=xerr, color=colors, alpha=0.8, capsize=3)
        ax.axvline(1000, color="0.5", lw=1, ls="--")
        low = min((part["elo"] - xerr[0]).min(), 1000) - 40
        ax.set_xlim(left=low)
        ax.set_xlabel("Elo (SFT = 1000)")
        ax.set_title(f"{kind} Elo")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, folder, "figure3")


EXACT_PANELS = {"one step": ("sft", "dpo-h", "kto-h", "dpo-s"), "merges": ("psacpo", "naive-merge"),
                "RL and dual": ("saferlhf", "repo", "mocan")}       # every other family (a sweep) gets its own


def plot_exact(points, fronts, folder: Path) -> list[Path]:
    """The exact benchmark: the closed-form fronts (expected r against expected g as lambda runs; the
    KL-regularised one solid, Safe RLHF's normalised one dashed) and, for every model, its target (hollow)
    joined to where it landed (filled; the mean over seeds), one panel per family of methods."""
    plt = _plt()
    means = points.groupby("method", sort=False).mean(numeric_only=True).reset_index()
    panels: dict = {}
    for method in means["method"]:
        family = split(method)[0]
        name = next((p for p, members in EXACT_PANELS.items() if family in members), family)
        panels.setdefault(name, []).append(method)
    cols = min(3, len(panels))
    rows_n = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 4.4 * rows_n), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (name, methods) in zip(axes.flat, panels.items()):
        for family in dict.fromkeys(fronts["family"]):
            curve = fronts[fronts["family"] == family]
            ax.plot(curve["g"], curve["r"], color="0.45", lw=1.2, ls="--" if "PPO" in family else "-", label=family)
        for i, row in enumerate(means[means["method"].isin(methods)].itertuples()):
            color = f"C{i % 10}"
            ax.plot([row.target_g, row.exact_g], [row.target_r, row.exact_r], color=color, lw=0.8, alpha=0.6)
            ax.scatter([row.target_g], [row.target_r], facecolors="none", edgecolors=color, s=45)
            ax.scatter([row.exact_g], [row.exact_r], color=color, s=30, label=row.method)
        ax.set_xlabel("expected safety g")
        ax.set_ylabel("expected helpfulness r")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="best")
    seeds = points["seed"].nunique()
    fig.suptitle(f"exact benchmark: hollow = the optimum a method targets, filled = where it landed "
                 f"(mean over {seeds} seed{'s' if seeds > 1 else ''})", fontsize=11)
    fig.tight_layout()
    return _save(fig, folder, "exact_front")


def draw_all(folder: Path, paper: bool = False, per_seed: bool = False) -> list[Path]:
    """Every figure the results folder has data for."""
    import pandas as pd
    from safealign.report import load_summary
    folder = Path(folder)
    summary = load_summary(folder)
    seeds = per_seed_points(folder) if per_seed else None
    figs = plot_tradeoff(summary, folder / "figures") + plot_figure2(summary, folder / "figures", paper, seeds)
    if (folder / "elo.csv").exists():
        figs += plot_figure3(pd.read_csv(folder / "elo.csv"), folder / "figures")
    if (folder / "exact.csv").exists():
        figs += plot_exact(pd.read_csv(folder / "exact.csv"), pd.read_csv(folder / "exact_front.csv"),
                           folder / "figures")
    return figs
