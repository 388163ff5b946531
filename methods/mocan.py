"""MoCAN (model-based constrained alignment via dualization, REFERENCE §7): the multiplier is solved once, offline,
from the dual of max E[r] - beta KL s.t. E[g] >= b, using answers sampled from pi_ref and scored by the reward and
cost models (g = -cost); then one DPO run from pi_ref on pseudo-preferences ranked by r + lambda* g.

The dual min_{lambda >= 0} E_x[beta log E_{y~pi_ref} exp((r + lambda (g - b))/beta)] is solved by bisection on its
derivative (safealign/exact.py `solve_lambda`). Pseudo-labels are drawn Bradley-Terry, P(y0 wins) =
sigmoid(s0 - s1) with s = r + lambda* g, not taken as the argmax: the score models are Bradley-Terry fits, so
these are the preferences a labeller with utility r + lambda* g would give, and DPO's optimum is then
pi_ref exp((r + lambda* g)/beta). On the exact benchmark the oracle's r and g and pi_ref's exact distribution
over the candidates replace the score models and the samples.

As CAN's code does it: 24 answers per prompt (two collections of `--num_return_sequences 12`,
CAN:scripts/collect.sh:118, concatenated per prompt at CAN:safe_rlhf/trainers/model_based.py:78-79), scored as
generated (CAN:safe_rlhf/evaluate/score.py reads the generated token ids; our sampling stage is raw, not cut at
the evaluation's stop words), and a bound that no lambda meets is a failure (CAN's solver gives up and reports
no maximiser, CAN:safe_rlhf/trainers/model_based.py:59-63), not an infinite lambda*.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from safealign import BenchError
from safealign.methods.preference import StepConfig


@dataclass
class MoCANConfig(StepConfig):
    threshold: float = 0.0          # the cost bound d: E[cost] <= d, i.e. E[g] >= b = -d
    samples: int = 24               # answers sampled from pi_ref per training prompt for the dual: CAN's 2 x 12
    temperature: float = 1.0
    score_models: str = "saferlhf"  # the RL method whose reward and cost models (and their stages) are used


def config(run, name: str, params: dict) -> MoCANConfig:
    merged = {**run.config.get("train", {}), **run.method_settings(name, params)}
    return MoCANConfig.from_dict(merged, f"methods.{name}")


def dual_lambda(logw: np.ndarray, r: np.ndarray, g: np.ndarray, beta: float, threshold: float) -> float:
    """lambda* of the dual on pi_ref's scored answers (weights exp(logw)), or a BenchError when the score models
    gave a non-finite score or when no finite lambda meets E[cost] <= threshold: as lambda grows pi_lambda
    keeps only each prompt's least costly answer, so the bound is out of reach when even those average a
    higher cost."""
    from safealign.exact import LAMBDA_CAP, solve_lambda
    if not (np.isfinite(r).all() and np.isfinite(g).all()):
        raise BenchError("mocan: a reward or cost score of pi_ref's answers is not finite; check the score "
                         "models that methods.mocan.score_models names")
    lam = solve_lambda(logw, r, g, beta, -threshold)
    if not np.isfinite(lam):
        floor = -float(np.where(np.isfinite(logw), g, -np.inf).max(axis=1).mean())
        raise BenchError(f"methods.mocan.threshold = {threshold:g} is out of reach: no lambda up to {LAMBDA_CAP:g} "
                         f"gets E[cost] <= {threshold:g} (even each prompt's least costly sample averages cost "
                         f"{floor:.4g}); raise the threshold above {floor:.4g}")
    return float(lam)


def pseudo_labels(rows: list[dict], s0: np.ndarray, s1: np.ndarray, seed: int) -> list[dict]:
    """Rows with better_response_id drawn as P(0 wins) = sigmoid(s0 - s1) (CAN:safe_rlhf/algorithms/cdpo/
    dpo.py:235-236). A NaN score (inf - inf) would read as "response 0 wins": refused."""
    from safealign.exact import sigmoid
    if not (np.isfinite(s0).all() and np.isfinite(s1).all()):
        raise BenchError("mocan: non-finite pseudo-preference scores r + lambda* g; check lambda* and the score models")
    p0 = sigmoid(np.asarray(s0) - np.asarray(s1))
    draws = np.random.default_rng(seed).random(len(rows))
    return [{**row, "better_response_id": int(u >= p)} for row, p, u in zip(rows, p0, draws)]


def _oracle(job, rows: list[dict]):
    """Exact benchmark: r and g of every training answer from the table, and the dual over pi_ref exactly."""
    from safealign import exact
    from safealign.exact_eval import candidate_logps
    world = job.inputs["data"].record["config"]["exact"]
    t = exact.tables(**{k: world[k] for k in exact.TABLE_KEYS})
    logp_ref = exact.log_normalise(candidate_logps(job.inputs["reference"].model, t, job.config["template"]))

    def score(side: str) -> tuple[np.ndarray, np.ndarray]:
        idx = [exact.lookup(t, row["prompt"], row[side]) for row in rows]
        return np.array([t["r"][i] for i in idx]), np.array([t["g"][i] for i in idx])
    return logp_ref, t["r"], t["g"], score


def score_stages(run, cfg: MoCANConfig) -> dict:
    """The reward and cost model stages of the RL method `cfg.score_models` names ({} on the exact benchmark)."""
    if run.is_exact:
        return {}
    from safealign.methods.ppo import rl_config, score_models
    return score_models(run, rl_config(run, cfg.score_models, {}))


def _score_models(job, cfg: MoCANConfig, rows: list[dict]):
    """Other benchmarks: `samples` answers per training prompt from pi_ref (the `samples` input), scored by the
    score models."""
    from safealign.eval.judges import ScoreModelJudge
    from safealign.stages import read_jsonl
    judge = ScoreModelJudge(str(job.inputs["reward"].model), str(job.inputs["cost"].model), job.config["template"])
    sampled = read_jsonl(job.inputs["samples"] / "generations.jsonl")
    sampled.sort(key=lambda s: (s["prompt_id"].rsplit("#", 1)[0], s.get("sample", 0)))
    prompts = {s["prompt_id"].rsplit("#", 1)[0] for s in sampled}
    r = np.array(judge.scores("helpfulness", [s["prompt"] for s in sampled], [s["response"] for s in sampled]))
    g = -np.array(judge.scores("harmlessness", [s["prompt"] for s in sampled], [s["response"] for s in sampled]))
    shape = (len(prompts), cfg.samples)
    logw = np.full(shape, -np.log(cfg.samples))          # the empirical pi_ref: each sample weighs 1/n

    def score(side: str) -> tuple[np.ndarray, np.ndarray]:
        texts = [row[side] for row in rows]
        ps = [row["prompt"] for row in rows]
        return np.array(judge.scores("helpfulness", ps, texts)), -np.array(judge.scores("harmlessness", ps, texts))
    return logw, r.reshape(shape), g.reshape(shape), score


def dual_stage(job) -> None:
    """Write dual.json (lambda*, pi_ref's E[g] and the bound) and relabelled.jsonl (the pseudo-preferences)."""
    from safealign.exact import expected
    from safealign.pipeline import train_rows
    from safealign.stages import write_atomic, write_jsonl
    cfg = MoCANConfig.from_dict(job.config["mocan"], "mocan")
    rows = train_rows(job)
    logw, r, g, score = _score_models(job, cfg, rows) if "reward" in job.inputs else _oracle(job, rows)
    lam = dual_lambda(logw, r, g, cfg.beta, cfg.threshold)
    (r0, g0), (r1, g1) = score("response_0"), score("response_1")
    write_jsonl(job.work / "relabelled.jsonl", pseudo_labels(rows, r0 + lam * g0, r1 + lam * g1, job.config["seed"]))
    write_atomic(job.work / "dual.json", json.dumps({"lambda": lam, "bound_g": -cfg.threshold, "beta": cfg.beta,
                                                     "ref_expected_g": float(expected(logw, g).mean())}, indent=2))
    job.log(f"MoCAN: lambda* = {lam:.4g} from the dual")


def mocan(run, name: str, params: dict) -> list:
    cfg = config(run, name, params)
    inputs = {"reference": run.reference, "data": run.data_stage}
    if not run.is_exact:          # new score models or new samples mean a new lambda*
        inputs.update(score_stages(run, cfg))
        # raw answers: the score models read them as generated, like the dataset answers they relabel
        inputs["samples"] = run.generate("sft", run.reference, "train", cfg.samples, temperature=cfg.temperature,
                                         raw=True)
    dual = run.stage("mocan-dual", "safealign.methods.mocan:dual_stage", {"mocan": asdict(cfg), "seed": run.seed,
                     "limit": run.limit, "template": run.template}, inputs, f"{name} dual")
    step = StepConfig(**{k: v for k, v in asdict(cfg).items() if k in StepConfig.__dataclass_fields__})
    step.target = "helpfulness"                     # the pseudo-label sits in better_response_id
    return [(name, run.align(name, step, run.reference, run.reference, dual=dual))]


def mocan_target(run, name: str, params: dict) -> list:
    """pi_ref exp((r + lambda* g)/beta) with lambda* from the exact dual."""
    cfg = config(run, name, params)
    logp_ref, r, g = run.exact_arrays()
    lam = dual_lambda(logp_ref, r, g, cfg.beta, cfg.threshold)
    return [(name, {"a": 1.0 / cfg.beta, "b": lam / cfg.beta, "loss": "dpo", "lambda_target": lam,
                    "front": (cfg.beta, False)})]
