"""SACPO, stepwise alignment (Wachi et al. 2024, Theorem 1): pi* = pi*_r exp(lambda g / beta) / Y(x), so the
constrained optimum is reached by first aligning for one objective, then re-aligning the result for the other
with KL coefficient beta/lambda and the step-1 model as the reference. lambda is never learned: beta/lambda is
swept and chosen post hoc (REFERENCE §1-§2).

Variants are fields: `first` names the one-step method of step 1 (dpo-h, kto-h, dpo-s: its config, and so its
cached stage, is shared with that method), `loss`/`target` say what step 2 optimises, `ratios` the beta/lambda
sweep. Every other key overrides step 2's optimiser settings (the paper's step 2 uses a smaller batch).
"""
from __future__ import annotations

from safealign import BenchError
from safealign.methods.preference import plan_reference_logps, step_config

SWEEP_KEYS = ("first", "ratios")
ONE_STEP = "safealign.methods.preference:one_step"


def step2_configs(run, name: str, settings: dict) -> list:
    """(beta/lambda, step-2 config) for each point of the sweep; every key but first/ratios is a step-2 setting."""
    from safealign.registry import METHODS, check_sweep
    check_sweep(name, settings, "ratios", "first")
    if settings["first"] not in METHODS or METHODS[settings["first"]].plan != ONE_STEP:
        raise BenchError(f"[methods.{name}] first = '{settings['first']}' must be a one-step method (dpo-h, kto-h, dpo-s)")
    rest = {k: v for k, v in settings.items() if k not in SWEEP_KEYS}
    return [(float(r), step_config(run, name, {**rest, "beta": float(r)}, defaults=False)) for r in settings["ratios"]]


def stepwise(run, name: str, params: dict) -> list:
    settings = run.method_settings(name, params)
    configs = step2_configs(run, name, settings)
    step1 = run.model_of(settings["first"])
    out = []
    for ratio, cfg in configs:
        label = f"{name}@{float(ratio):g}"
        # Theorem 1: step 2 starts from the step-1 model AND keeps it, frozen, as its reference; a DPO step reads
        # that reference's log-probabilities from one stage shared by the whole sweep (TRL's KTO has no such input).
        shared = {"ref_logps": plan_reference_logps(run, cfg, step1)} if cfg.loss == "dpo" else {}
        out.append((label, run.align(label, cfg, policy=step1, reference=step1, **shared)))
    return out


def stepwise_target(run, name: str, params: dict) -> list:
    """Theorem 1 on the exact benchmark: step 2 multiplies the step-1 optimum by exp(score / (beta/lambda)), so
    the coefficients add: DPO(H) at beta then DPO(S) at beta/lambda is pi_ref exp((r + lambda g)/beta)."""
    settings = run.method_settings(name, params)
    (_, first), = run.targets_of(settings["first"])
    out = []
    for ratio, cfg in step2_configs(run, name, settings):
        key = "a" if cfg.target == "helpfulness" else "b"
        loss = first["loss"] if first["loss"] == cfg.loss else f"{first['loss']}+{cfg.loss}"
        out.append((f"{name}@{float(ratio):g}", {**first, key: first[key] + 1.0 / cfg.beta, "loss": loss}))
    return out
