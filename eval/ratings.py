"""Ratings from pairwise judgments: the paper's Elo and a Bradley-Terry maximum-likelihood rating.

Both are pure functions over a table of (model_a, model_b, score_a, score_b) rows and take a seeded
numpy Generator for every random draw.
"""
from __future__ import annotations

import numpy as np

from safealign.eval.winrate import outcome


def outcomes(rows: list[dict]) -> list[tuple[str, str, float]]:
    """(a, b, s) with s = 1 when a's score is higher, 0.5 on a tie, 0 when lower; failed judgments dropped."""
    return [(r["model_a"], r["model_b"], outcome(r["score_a"], r["score_b"])) for r in rows if r.get("ok", True)]


def elo_update(ra: float, rb: float, s: float, k: float = 32.0, divisor: float = 400.0) -> tuple[float, float]:
    """One Elo game: E_a = 1 / (1 + 10^((r_b - r_a)/divisor)); r_a += K (s - E_a); r_b += K ((1 - s) - (1 - E_a))."""
    ea = 1.0 / (1.0 + 10.0 ** ((rb - ra) / divisor))
    return ra + k * (s - ea), rb - k * (s - ea)


def elo_pass(games: list[tuple[str, str, float]], ratings: dict[str, float], k: float = 32.0,
             divisor: float = 400.0) -> dict[str, float]:
    ratings = dict(ratings)
    for a, b, s in games:
        ratings[a], ratings[b] = elo_update(ratings[a], ratings[b], s, k, divisor)
    return ratings


def _fast_pass(ia: list, ib: list, s: list, order, r: list, k: float, divisor: float) -> None:
    """elo_pass on model indices, in place: the same arithmetic, without dictionaries (the hot loop of Elo)."""
    for g in order:
        a, b = ia[g], ib[g]
        delta = k * (s[g] - 1.0 / (1.0 + 10.0 ** ((r[b] - r[a]) / divisor)))
        r[a] += delta
        r[b] -= delta


def unit_counts(rows: list[dict], rng: np.random.Generator) -> np.ndarray:
    """One two-way bootstrap draw of judgments, as a count per row: seeds and prompts are drawn with replacement
    and every judgment of a drawn (seed, prompt) unit (all model pairs, orders and rounds) counts as often as its
    unit was drawn."""
    from collections import Counter
    seeds = sorted({r.get("seed", 0) for r in rows})
    prompts = sorted({r["prompt_id"] for r in rows})
    ns = Counter(seeds[i] for i in rng.integers(0, len(seeds), len(seeds)))
    npr = Counter(prompts[i] for i in rng.integers(0, len(prompts), len(prompts)))
    return np.array([ns[r.get("seed", 0)] * npr[r["prompt_id"]] for r in rows], dtype=int)


def resample_units(rows: list[dict], rng: np.random.Generator) -> list[dict]:
    """unit_counts as rows: each judgment repeated as often as its unit was drawn (Elo needs the games listed)."""
    return [r for r, n in zip(rows, unit_counts(rows, rng)) for _ in range(n)]


def elo(rows: list[dict], rng: np.random.Generator, anchor: str = "sft", trials: int = 50, passes: int = 10,
        init: float = 1200.0, k: float = 32.0, divisor: float = 400.0, anchor_value: float = 1000.0) -> dict:
    """The SACPO protocol (REFERENCE §3), as line/sacpo's compute_scores.py runs it: each of `trials` trials
    starts every model at `init` and makes `passes` sequential passes over the judgments, drawing a fresh
    order with `rng` before EVERY pass (not one order per trial, reused by all its passes); at the end of the
    trial every rating is multiplied by anchor_value / Elo(anchor), so SFT reads 1000. Returns
    {model: (mean, std)} over trials (population std, numpy's default, as the official code).

    The order is drawn with rng.permutation(len(judgments)), once per pass, trials outer, passes inner: with
    the same seed the draws are reproducible. Failed judgments are dropped (see `outcomes`)."""
    games = outcomes(rows)
    models = sorted({m for a, b, _ in games for m in (a, b)})
    if anchor not in models:
        raise ValueError(f"Elo needs judgments involving the anchor model '{anchor}'")
    idx = {m: i for i, m in enumerate(models)}
    ia, ib, sc = [idx[a] for a, _, _ in games], [idx[b] for _, b, _ in games], [s for _, _, s in games]
    results = {m: [] for m in models}
    for _ in range(trials):
        r = [init] * len(models)
        for _ in range(passes):
            _fast_pass(ia, ib, sc, rng.permutation(len(games)).tolist(), r, k, divisor)    # reshuffled every pass
        scale = anchor_value / r[idx[anchor]]
        for m in models:
            results[m].append(r[idx[m]] * scale)
    return {m: (float(np.mean(v)), float(np.std(v))) for m, v in results.items()}


def elo_ci(rows: list[dict], rng: np.random.Generator, rounds: int = 30, level: float = 0.95, **kw) -> dict:
    """The paper's Elo (mean, std over trials) plus an interval over prompts and seeds: `rounds` bootstrap draws
    of the (seed, prompt) units (resample_units), one Elo trial each; the interval is their percentiles.
    Returns {model: (mean, std, low, high)}."""
    point = elo(rows, rng, **kw)
    draws = {m: [] for m in point}
    for _ in range(rounds):
        one = elo(resample_units(rows, rng), rng, **{**kw, "trials": 1})
        for m in draws:
            draws[m].append(one.get(m, (np.nan,))[0])
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    return {m: (*point[m], *map(float, np.nanquantile(draws[m], q))) for m in point}


def bradley_terry(games: list[tuple[str, str, float]], models: list[str], anchor: str = "sft",
                  iters: int = 200, prior: float = 0.01, weights: np.ndarray | None = None) -> dict[str, float]:
    """Maximum-likelihood Bradley-Terry strengths on the Elo scale: P(a beats b) = 1/(1 + 10^((r_b - r_a)/400)).

    Ties count as half a win for each side; `weights` counts each game that many times (a bootstrap draw). MM
    updates (Hunter 2004) on p_i = 10^(r_i/400), with a small symmetric prior (`prior` virtual half-wins each way
    between every pair) so that an unbeaten model stays finite. The anchor is fixed at 1000."""
    idx = {m: i for i, m in enumerate(models)}
    n = len(models)
    ia = np.array([idx[a] for a, _, _ in games], dtype=int)
    ib = np.array([idx[b] for _, b, _ in games], dtype=int)
    s = np.array([x for _, _, x in games], dtype=float)
    w = np.ones(len(games)) if weights is None else np.asarray(weights, dtype=float)
    wins = np.zeros((n, n))
    np.add.at(wins, (ia, ib), s * w)
    np.add.at(wins, (ib, ia), (1.0 - s) * w)
    wins += prior * (1 - np.eye(n))
    games_ij = wins + wins.T
    p = np.ones(n)
    for _ in range(iters):
        denom = (games_ij / (p[:, None] + p[None, :])).sum(1)
        p = wins.sum(1) / denom
        p /= np.exp(np.mean(np.log(p)))
    r = 400.0 * np.log10(p)
    r += 1000.0 - r[idx[anchor]]
    return {m: float(r[idx[m]]) for m in models}


def bradley_terry_ci(rows: list[dict], rng: np.random.Generator, anchor: str = "sft", rounds: int = 200,
                     level: float = 0.95) -> dict:
    """BT ratings with bootstrap intervals (seeded): each round redraws the (seed, prompt) units with replacement
    (unit_counts) when the rows carry prompt ids, else single judgments, and refits."""
    kept = [r for r in rows if r.get("ok", True)]
    games = outcomes(kept)
    models = sorted({m for a, b, _ in games for m in (a, b)})
    point = bradley_terry(games, models, anchor)
    by_unit = all("prompt_id" in r for r in rows)
    samples = {m: [] for m in models}
    for _ in range(rounds):
        if by_unit:
            # the failed judgments take part in the draw (as resample_units would list them) and are then dropped
            weights = unit_counts(rows, rng)[[i for i, r in enumerate(rows) if r.get("ok", True)]]
        else:
            weights = np.bincount(rng.integers(0, len(games), len(games)), minlength=len(games))
        fit = bradley_terry(games, models, anchor, weights=weights)
        for m in models:
            samples[m].append(fit[m])
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    return {m: (point[m], float(np.quantile(samples[m], lo)), float(np.quantile(samples[m], hi))) for m in models}
