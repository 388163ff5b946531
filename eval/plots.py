"""Figures from a summary table: the helpfulness-vs-harmlessness trade-off (the shape of the paper's Fig. 2)."""
from __future__ import annotations

from pathlib import Path


def plot_tradeoff(summary, folder: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.axhline(0.5, color="0.85", lw=1, zorder=0)
    ax.axvline(0.5, color="0.85", lw=1, zorder=0)
    for _, row in summary.iterrows():
        x, y = row["helpfulness_win_rate"], row["harmlessness_win_rate"]
        if row["method"] == "sft":
            ax.scatter([x], [y], marker="x", s=80, color="black", zorder=3)
        else:
            ax.errorbar([x], [y], xerr=[row["helpfulness_win_rate_std"]], yerr=[row["harmlessness_win_rate_std"]],
                        fmt="o", ms=7, capsize=3, zorder=3)
        ax.annotate(row["method"], (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("helpfulness win rate vs SFT")
    ax.set_ylabel("harmlessness win rate vs SFT")
    ax.set_title("Helpfulness vs harmlessness (up and right is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths = [folder / "tradeoff.png", folder / "tradeoff.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths
