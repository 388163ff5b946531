"""Every trained model on the exact benchmark, measured against the optimum its method targets (issue 10).

A model's policy over the candidates is read off exactly: log pi(y|x) = log p(y, </s> | x) from the same
sequence log-probabilities DPO trains on (methods/preference.py `sequence_logps`), renormalised over the
candidates (`candidate_mass` says how much probability the candidates hold at all). Each method's target comes
from its registry row (`Method.target`), so this module knows no method by name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from safealign import exact

COLUMNS = ("exact_kl", "exact_tv", "implicit_corr", "exact_r", "exact_g", "target_r", "target_g", "exact_cost",
           "exact_prompts_over", "fit_beta", "fit_lambda", "fit_kl", "candidate_mass", "lambda_final")


def candidate_logps(model_path: Path, t: dict, template: str) -> np.ndarray:
    """log p(candidate + </s> | prompt) for every prompt and candidate, shape [P, K] (not renormalised)."""
    from safealign.methods.preference import sequence_logps
    from safealign.models import load_policy
    model, tok = load_policy(model_path)
    prompts = [template.format(input=p) for p in t["prompts"] for _ in t["candidates"]]
    answers = [" " + c for _ in t["prompts"] for c in t["candidates"]]
    return sequence_logps(model, tok, prompts, answers).double().numpy().reshape(len(t["prompts"]), -1)


def final_lambda(stage: Path) -> float:
    """The multiplier an RL stage ended with (its curves), NaN for a stage that has none."""
    import json
    curves = stage / "curves.jsonl"
    if not curves.exists():
        return float("nan")
    lines = [ln for ln in curves.read_text().splitlines() if ln.strip()]
    return float(json.loads(lines[-1])["lambda"]) if lines else float("nan")


def score_model_fit(stage, t: dict, template: str) -> dict:
    """For an RL stage: how the learned reward and cost models read the true r and c = -g on every candidate
    (slope and correlation of a least-squares line; the cost also its offset, since Safe RLHF's threshold is in
    the cost model's units). {} for a stage without score models."""
    import json

    from safealign.eval.judges import ScoreModelJudge
    meta = json.loads((stage / "stage.json").read_text())
    inputs = meta.get("inputs", {})
    if "reward" not in inputs or "cost" not in inputs:
        return {}
    root = Path(stage / "stage.json").parents[2]      # the cache: stage.json's paths may predate a move
    judge = ScoreModelJudge(str(root / "score-model" / Path(inputs["reward"]).name / "model"),
                            str(root / "score-model" / Path(inputs["cost"]).name / "model"), template)
    prompts = [p for p in t["prompts"] for _ in t["candidates"]]
    answers = [c for _ in t["prompts"] for c in t["candidates"]]
    out = {}
    for name, kind, truth in (("reward", "helpfulness", t["r"]), ("cost", "harmlessness", -t["g"])):
        learned = np.array(judge.scores(kind, prompts, answers))
        slope, offset = np.polyfit(truth.ravel(), learned, 1)
        out.update({f"{name}_model_slope": float(slope), f"{name}_model_corr":
                    float(np.corrcoef(truth.ravel(), learned)[0, 1])})
        if name == "cost":
            out["cost_model_offset"] = float(offset)
    return out


def measure(raw: np.ndarray, logp_ref: np.ndarray, r: np.ndarray, g: np.ndarray, target: dict,
            threshold: float) -> dict:
    """The distance of one policy (raw candidate log-probs) to its target pi_ref exp(a r + b g)/Z."""
    logp = exact.log_normalise(raw)
    star = exact.gibbs(logp_ref, r, g, target["a"], target["b"])
    a, b = np.broadcast_to(target["a"], (len(r), 1)), np.broadcast_to(target["b"], (len(r), 1))
    fit_a, fit_b, fit_kl = exact.fit_family(logp, logp_ref, r, g)
    cost = -exact.expected(logp, g)
    return {"exact_kl": exact.kl(logp, star), "exact_tv": exact.tv(logp, star),
            "implicit_corr": exact.implicit_corr(logp, logp_ref, a * r + b * g),
            "exact_r": float(exact.expected(logp, r).mean()), "exact_g": float(exact.expected(logp, g).mean()),
            "target_r": float(exact.expected(star, r).mean()), "target_g": float(exact.expected(star, g).mean()),
            "exact_cost": float(cost.mean()), "exact_prompts_over": float((cost > threshold).mean()),
            "fit_beta": 1.0 / fit_a if fit_a > 0 else float("inf"),
            "fit_lambda": fit_b / fit_a if fit_a > 0 else float("inf"),
            "fit_kl": fit_kl, "candidate_mass": float(np.exp(raw).sum(-1).mean())}


def describe(target: dict) -> str:
    """'beta 0.1, lambda 4' for a target with scalar coefficients; per-prompt ones say so."""
    a, b = np.asarray(target["a"]), np.asarray(target["b"])
    if a.size > 1:
        lam = b / a
        return f"per-prompt lambda (median {float(np.median(lam)):.3g}), beta {float(np.median(1 / (a * (1 + lam)))):.3g}"
    if a == 0 and b == 0:
        return "pi_ref"
    if a == 0:
        return f"safety only, beta {1 / float(b):.3g}"
    return f"beta {1 / float(a):.3g}, lambda {float(b / a):.3g}"


def method_rows(run, models: dict) -> list[dict]:
    """One row per (label, seed): the distances of `measure`, the target's description, and for RL stages their
    final multiplier beside the target's."""
    t = run.exact_table()
    out = []
    for seed in dict.fromkeys(seed for _, seed in models):
        run.seed, run.reference = seed, run.references[seed]     # one per seed only with [policy] sft_per_seed
        out += _rows(run, {label: st for (label, sd), st in models.items() if sd == seed}, seed, t)
    run.seed, run.reference = run.ref_seed, run.references[run.ref_seed]
    return out


def _rows(run, models: dict, seed: int, t: dict) -> list[dict]:
    logp_ref, r, g = run.exact_arrays()
    aims = targets(run)
    out = []
    for label, stage in models.items():
        target = aims[label]
        row = {"method": label, "seed": seed, "target": describe(target), "loss": target["loss"],
               "front": front_name(target.get("front")),
               **measure(candidate_logps(stage.model, t, run.template), logp_ref, r, g, target,
                         run.typed["diagnostics"].threshold),
               "lambda_final": final_lambda(stage), **score_model_fit(stage, t, run.template)}
        for key in ("lambda_target", "lambda_star"):
            if key in target:
                row[key] = float(np.median(target[key]))
        out.append(row)
    return out


def front_name(front) -> str:
    """The name of the front a target moves along ('' for none), as exact_front.csv and the figure write it."""
    if not front:
        return ""
    beta, normalised = front
    return f"{'PPO-Lagrangian' if normalised else 'KL-regularised'} optimum, beta {beta:g}"


def targets(run) -> dict:
    return {label: target for spec in run.methods for label, target in run.targets_of(spec)}


def front_rows(run) -> list[dict]:
    """The closed-form fronts the figure draws, one per (KL coefficient, objective) that a target names in its
    `front`: the DPO(H) beta for the preference methods, the RL kl_coeff (Safe RLHF's normalised objective)."""
    logp_ref, r, g = run.exact_arrays()
    fronts = dict.fromkeys(tuple(t["front"]) for t in targets(run).values() if t.get("front"))
    out = []
    for beta, normalised in fronts:
        out += [{"family": front_name((beta, normalised)), "beta": beta, "normalised": normalised, **p}
                for p in exact.front(logp_ref, r, g, beta, normalised)]
    return out


def summary_columns(rows: list[dict], label: str) -> dict:
    """Mean over seeds of each exact figure, with its standard deviation over seeds where there are several."""
    mine = [r for r in rows if r["method"] == label]
    if not mine:
        return {}
    out = {"target": mine[0]["target"]}
    for col in COLUMNS + ("lambda_target", "lambda_star", "cost_model_slope", "cost_model_offset", "cost_model_corr",
                          "reward_model_corr"):
        values = np.array([r.get(col, np.nan) for r in mine], dtype=float)
        if np.isnan(values).all():
            continue
        out[col] = float(np.nanmean(values))
        if len(values) > 1 and col in ("exact_kl", "exact_tv", "exact_r", "exact_g", "lambda_final"):
            out[f"{col}_std"] = float(np.nanstd(values, ddof=1))
    return out


def convergence(sizes: list[int], seeds: list[int], out: Path, cache: Path | None = None, method: str = "dpo-h",
                overrides: list[str] | None = None) -> list[dict]:
    """`method`'s distance to its optimum as the preference data grows (exact.pairs_per_prompt = each size), one
    exact run per size with every seed; writes convergence.csv and convergence.png under `out`. The reference is
    SFT-trained on each size's own data, so each distance is to that run's own optimum."""
    import pandas as pd

    from safealign.run import Run
    from safealign.stages import write_atomic
    rows = []
    for n in sizes:
        run = Run("exact", method, out / f"pairs-{n}", cache, seeds=seeds,
                  overrides=[*(overrides or []), f"exact.pairs_per_prompt={n}"])
        run.execute()
        per_seed = pd.read_csv(out / f"pairs-{n}" / "exact.csv")
        rows += [{"pairs_per_prompt": n, **r} for r in per_seed[per_seed["method"] == method].to_dict("records")]
    table = pd.DataFrame(rows)
    write_atomic(out / "convergence.csv", table.to_csv(index=False))
    _plot_convergence(table, out / "convergence.png", method)
    return rows


def _plot_convergence(table, path: Path, method: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, col, name in ((axes[0], "exact_kl", "KL(pi || pi*)"),
                          (axes[1], "implicit_corr", "implicit-reward correlation")):
        ax.scatter(table["pairs_per_prompt"], table[col], color="C0", alpha=0.5, s=18, label="one seed")
        means = table.groupby("pairs_per_prompt")[col].mean()
        ax.plot(means.index, means.values, color="C0", marker="o", label=f"mean over {table['seed'].nunique()} seeds")
        ax.set_xscale("log")
        ax.set_xticks(list(means.index), [str(n) for n in means.index])
        ax.minorticks_off()
        ax.set_xlabel("preference pairs per prompt")
        ax.set_title(f"{method}: {name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
