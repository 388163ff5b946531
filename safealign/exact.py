"""The exact world: a benchmark whose optimum is known in closed form (issue 10).

Each prompt has a few candidate answers, each one word followed by end-of-sequence, so a policy's distribution
over the candidates is read off exactly from its sequence log-probabilities. Helpfulness r(x, y) and safety
g(x, y) are known numbers; preference labels are drawn Bradley-Terry from them (P(y1 better) = sigmoid(r1 - r2),
P(y1 safer) = sigmoid(g1 - g2)) and the safety flag is drawn as P(safe) = sigmoid(g), so Safe RLHF's cost model
(pairwise + sign terms, REFERENCE §5) is well specified with cost c = -g.

Everything below is numpy only: policies are arrays log pi[P, K] (prompts x candidates), normalised per row.
"""
from __future__ import annotations

import numpy as np

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
LAMBDA_CAP = 1e6       # a constraint that no finite multiplier meets reports lambda = inf
TABLE_KEYS = ("seed", "prompts", "candidates", "scale", "correlation", "behaviour_scale")


# -- the world ------------------------------------------------------------------------------------------------
def prompt_text(i: int) -> str:
    """The prompt's own word comes last, right before the answer: pi(y|x) is then a function of the last token,
    which a tiny model learns as reliably as a bigram (a word further back must be found by attention, and a
    2-layer model trained from scratch was measured to ignore it: the same pi_ref for every prompt)."""
    return f"pick one answer for task{i}"


def tables(seed: int = 0, prompts: int = 16, candidates: int = 4, scale: float = 2.0, correlation: float = -0.5,
           behaviour_scale: float = 1.0) -> dict:
    """r, g (prompts x candidates) and the behaviour policy mu that wrote the data; correlation < 0 makes the
    helpful answers the less safe ones, the trade-off the benchmark is about."""
    if not 2 <= candidates <= len(WORDS):
        raise ValueError(f"exact.candidates must be 2..{len(WORDS)}, got {candidates}")
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, scale, (prompts, candidates))
    z = rng.normal(0.0, scale, (prompts, candidates))
    g = correlation * r + np.sqrt(1.0 - correlation ** 2) * z
    mu = softmax(rng.normal(0.0, behaviour_scale, (prompts, candidates)))
    return {"r": r, "g": g, "mu": mu, "prompts": [prompt_text(i) for i in range(prompts)],
            "candidates": list(WORDS[:candidates])}


def pairs(t: dict, n: int, rng: np.random.Generator, start: int = 0) -> list[dict]:
    """n PKU-SafeRLHF-schema rows per prompt: two different answers drawn from mu, labels drawn from r and g."""
    rows = []
    for i, prompt in enumerate(t["prompts"]):
        for _ in range(n):
            a, b = rng.choice(len(t["candidates"]), size=2, replace=False, p=t["mu"][i])
            safe = rng.random(2) < sigmoid(t["g"][i, [a, b]])
            rows.append({"prompt_id": f"x{start + len(rows):05d}", "prompt": prompt, "category": f"task {i}",
                         "response_0": t["candidates"][a], "response_1": t["candidates"][b],
                         "better_response_id": int(rng.random() >= sigmoid(t["r"][i, a] - t["r"][i, b])),
                         "safer_response_id": int(rng.random() >= sigmoid(t["g"][i, a] - t["g"][i, b])),
                         "is_response_0_safe": bool(safe[0]), "is_response_1_safe": bool(safe[1])})
    return rows


def build(seed: int = 0, prompts: int = 16, candidates: int = 4, pairs_per_prompt: int = 64,
          test_pairs_per_prompt: int = 8, scale: float = 2.0, correlation: float = -0.5,
          behaviour_scale: float = 1.0) -> dict:
    """The splits every benchmark has; both evaluation sets hold every prompt (the optimum is per prompt)."""
    t = tables(seed, prompts, candidates, scale, correlation, behaviour_scale)
    rng = np.random.default_rng(seed + 1)
    out = {"train": pairs(t, pairs_per_prompt, rng), "test": pairs(t, test_pairs_per_prompt, rng, start=10 ** 5)}
    for s in ("helpful", "redteam"):
        out[f"{s}_eval"] = [{"prompt_id": f"{s}-{i:03d}", "prompt": p, "category": f"task {i}"}
                            for i, p in enumerate(t["prompts"])]
    return out


def lookup(t: dict, prompt: str, answer: str) -> tuple[int, int] | None:
    """(prompt row, candidate column) of an answer, or None for an answer that is no candidate."""
    try:
        return t["prompts"].index(prompt.strip()), t["candidates"].index(answer.strip())
    except ValueError:
        return None


# -- policies as arrays --------------------------------------------------------------------------------------------
def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_normalise(logits))


def log_normalise(logits: np.ndarray) -> np.ndarray:
    m = logits.max(-1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))


def gibbs(logp_ref: np.ndarray, r: np.ndarray, g: np.ndarray, a, b) -> np.ndarray:
    """log pi*(y|x) = log pi_ref + a r + b g - log Z(x) (REFERENCE §1 with a = 1/beta, b = lambda/beta);
    a and b may be per-prompt arrays (shape [P, 1])."""
    return log_normalise(logp_ref + a * r + b * g)


def kl(logp: np.ndarray, logq: np.ndarray) -> float:
    """KL(p || q) per prompt, averaged over prompts."""
    return float((np.exp(logp) * (logp - logq)).sum(-1).mean())


def tv(logp: np.ndarray, logq: np.ndarray) -> float:
    return float(0.5 * np.abs(np.exp(logp) - np.exp(logq)).sum(-1).mean())


def expected(logp: np.ndarray, v: np.ndarray) -> np.ndarray:
    """E_{pi(.|x)}[v] per prompt."""
    return (np.exp(logp) * v).sum(-1)


def implicit_corr(logp: np.ndarray, logp_ref: np.ndarray, score: np.ndarray) -> float:
    """Pearson correlation of the implicit reward log(pi/pi_ref) with the true score, both centred per prompt
    (DPO's implicit reward is defined up to a per-prompt constant)."""
    imp = logp - logp_ref
    a, b = imp - imp.mean(-1, keepdims=True), score - score.mean(-1, keepdims=True)
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / norm) if norm > 0 else float("nan")     # pi_ref's own target has no score


# -- constrained optima ---------------------------------------------------------------------------------------------
def policy_at(logp_ref, r, g, beta: float, lam, normalised: bool = False) -> np.ndarray:
    """The maximiser of E[r + lam g] - beta KL (pi_ref exp((r + lam g)/beta)); normalised: Safe RLHF's actor
    objective (r - lam c)/(1 + lam) - beta KL, whose advantages are divided by 1 + lambda (REFERENCE §5)."""
    scale = beta * (1.0 + lam) if normalised else beta
    return gibbs(logp_ref, r, g, 1.0 / scale, lam / scale)


def solve_lambda(logp_ref, r, g, beta: float, bound: float, normalised: bool = False, per_prompt: bool = False):
    """The multiplier of max E[r] - beta KL s.t. E[g] >= bound (cost form: E[c] <= -bound), by bisection on
    E_{pi_lambda}[g] = bound, which rises with lambda (its derivative is Var(g)/beta). It is the minimiser of the
    convex dual, CAN's beta log E_ref exp((r + lambda (g - b))/beta) averaged over prompts (REFERENCE §7).
    0 when pi_ref's own optimum already meets the bound; inf when no lambda does. per_prompt: one lambda per
    prompt, each prompt's own constraint (RePO's per-prompt view); returns an array of shape [P, 1]."""
    if per_prompt:
        return np.array([[solve_lambda(logp_ref[i:i + 1], r[i:i + 1], g[i:i + 1], beta, bound, normalised)]
                         for i in range(len(r))])

    def slack(lam):
        return float(expected(policy_at(logp_ref, r, g, beta, lam, normalised), g).mean()) - bound
    if slack(0.0) >= 0:
        return 0.0
    hi = 1.0
    while slack(hi) < 0:
        hi *= 4
        if hi > LAMBDA_CAP:
            return float("inf")
    lo = 0.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slack(mid) < 0 else (lo, mid)
    return hi


def fit_family(logp, logp_ref, r, g, steps: int = 50) -> tuple[float, float, float]:
    """The nearest policy of the form pi_ref exp(a r + b g)/Z to pi, in KL(pi || .): (a, b, KL). Convex in (a, b)
    (an exponential family), solved by damped Newton steps: gradient E_q[phi] - E_pi[phi], Hessian Cov_q(phi).
    beta = 1/a and lambda = b/a say where a policy (a KTO step, a merge) lands on the closed-form front."""
    phi = np.stack([r, g], -1)
    target = (np.exp(logp)[..., None] * phi).sum(1).mean(0)
    theta = np.zeros(2)
    for _ in range(steps):
        q = np.exp(gibbs(logp_ref, r, g, theta[0], theta[1]))
        mean = (q[..., None] * phi).sum(1)
        centred = phi - mean[:, None, :]
        hess = np.einsum("pk,pki,pkj->ij", q, centred, centred) / len(r)
        grad = mean.mean(0) - target
        step = np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
        theta -= step / max(1.0, np.abs(step).max() / 5.0)     # damped: at most 5 per step
    return float(theta[0]), float(theta[1]), kl(logp, gibbs(logp_ref, r, g, theta[0], theta[1]))


def front(logp_ref, r, g, beta: float, normalised: bool = False, points: int = 40) -> list[dict]:
    """The closed-form front: expected r and g of the optimum as lambda runs from 0 to 1000 (log-spaced)."""
    out = []
    for lam in np.concatenate([[0.0], np.logspace(-2, 3, points)]):
        logp = policy_at(logp_ref, r, g, beta, lam, normalised)
        out.append({"lambda": float(lam), "r": float(expected(logp, r).mean()), "g": float(expected(logp, g).mean())})
    return out
