"""P-SACPO (SACPO §6): linear merging of model weights, theta(q) = (1 - q) * theta_a + q * theta_b.

P-SACPO merges DPO(H) (a) with DPO(H)->DPO(S) at beta/lambda 0.01 (b); the naive-merging baseline merges DPO(H)
with DPO(S) trained from SFT. A model is chosen by q after the fact, with no further training.
"""
from __future__ import annotations

from pathlib import Path

from safealign import BenchError


def merge_state_dicts(a: dict, b: dict, q: float) -> dict:
    """(1 - q) * a + q * b per tensor; the two must have the same parameter names and shapes."""
    if a.keys() != b.keys():
        diff = sorted(set(a) ^ set(b))
        raise BenchError(f"cannot merge checkpoints of different architectures: parameter '{diff[0]}' is in one only")
    out = {}
    for name, ta in a.items():
        tb = b[name]
        if ta.shape != tb.shape:
            raise BenchError(f"cannot merge checkpoints of different architectures: '{name}' has shape "
                             f"{tuple(ta.shape)} vs {tuple(tb.shape)}")
        if ta.is_floating_point():
            out[name] = ((1.0 - q) * ta.double() + q * tb.double()).to(ta.dtype)
        else:
            out[name] = ta.clone()       # integer buffers (position ids) are not interpolated
    return out


def merge_checkpoints(a: Path, b: Path, q: float, out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    ca, cb = AutoConfig.from_pretrained(a), AutoConfig.from_pretrained(b)
    if ca.architectures != cb.architectures or ca.model_type != cb.model_type:
        raise BenchError(f"cannot merge checkpoints of different architectures: {a} is {ca.architectures}, "
                         f"{b} is {cb.architectures}")
    ma, mb = AutoModelForCausalLM.from_pretrained(a), AutoModelForCausalLM.from_pretrained(b)
    ma.load_state_dict(merge_state_dicts(ma.state_dict(), mb.state_dict(), q))
    ma.save_pretrained(out)
    AutoTokenizer.from_pretrained(a).save_pretrained(out)


def merge_stage(job) -> None:
    merge_checkpoints(job.inputs["a"].model, job.inputs["b"].model, job.config["q"], job.work / "model")


def merge(run, name: str, params: dict) -> list:
    from safealign.registry import check_sweep
    settings = run.method_settings(name, params)
    check_sweep(name, settings, "weights", "a", "b")
    if any(not 0.0 <= float(q) <= 1.0 for q in settings["weights"]):
        raise BenchError(f"[methods.{name}] weights must lie in [0, 1], got {settings['weights']}")
    a, b = run.model_of(settings["a"]), run.model_of(settings["b"])
    return [(f"{name}@{float(q):g}", run.stage("merge", "safealign.methods.merge:merge_stage", {"q": float(q)},
                                               {"a": a, "b": b}, f"{name}@{float(q):g}"))
            for q in settings["weights"]]


def merge_target(run, name: str, params: dict) -> list:
    """Where a merge would land if the policies were logit-linear in their weights: (1 - q) log pi_a + q log pi_b,
    a geometric mixture, which is pi_ref exp(a r + b g) with the coefficients mixed (P-SACPO §6's argument)."""
    settings = run.method_settings(name, params)
    (_, ta), = run.targets_of(settings["a"])
    (_, tb), = run.targets_of(settings["b"])
    return [(f"{name}@{q:g}", {"a": (1 - q) * ta["a"] + q * tb["a"], "b": (1 - q) * ta["b"] + q * tb["b"],
                               "loss": "merge", "front": ta.get("front")})
            for q in map(float, settings["weights"])]
