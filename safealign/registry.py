"""The methods registry: one flat table from a name to the function that runs it (imported only when it
runs), the paper row it reproduces, and its defaults. Benchmark files override the defaults per method in
their [methods.<name>] sections; `--set methods.<name>.<key>=value` overrides those. `name@x+y` on the
command line sets a method's sweep (beta/lambda for SACPO, q for merges) to the listed points."""
from __future__ import annotations

from dataclasses import dataclass, field

from safealign import BenchError


@dataclass(frozen=True)
class Method:
    plan: str                  # "module:function"; it takes (run, name, params), plans the method's stages
                               # (checking its settings) and returns [(label, spec of the model)]
    paper_row: str             # what it reproduces (SACPO Table 3, win rates vs SFT: helpfulness / harmlessness)
    defaults: dict = field(default_factory=dict)
    sweep: str | None = None   # the setting that `name@a+b` replaces
    target: str | None = None  # "module:function" giving the optimum each model aims at on `exact` (issue 10)


ONE = "safealign.methods.preference:one_step"
STEPWISE = "safealign.methods.sacpo:stepwise"
MERGE = "safealign.methods.merge:merge"
RL = "safealign.methods.ppo:rl_method"
ONE_T, STEPWISE_T = "safealign.methods.preference:one_step_target", "safealign.methods.sacpo:stepwise_target"
MERGE_T, RL_T = "safealign.methods.merge:merge_target", "safealign.methods.ppo:rl_target"
RATIOS = [0.1, 0.05, 0.025, 0.01]          # the paper's beta/lambda sweep
WEIGHTS = [0.25, 0.5, 0.75]                # the paper's merge weights q

METHODS = {
    "sft": Method("safealign.methods.sft:reference",
                  "SFT reference pi_ref (alpaca-7b-reproduced); the baseline of every win rate",
                  target="safealign.methods.sft:reference_target"),
    "dpo-h": Method(ONE, "DPO(H) beta 0.1 (0.792 / 0.490)", {"loss": "dpo", "target": "helpfulness", "beta": 0.1},
                    target=ONE_T),
    "kto-h": Method(ONE, "KTO(H) beta 0.1 (0.678 / 0.458)", {"loss": "kto", "target": "helpfulness", "beta": 0.1},
                    target=ONE_T),
    "dpo-s": Method(ONE, "DPO(S) beta 0.01 (0.605 / 0.811)", {"loss": "dpo", "target": "safety", "beta": 0.01},
                    target=ONE_T),
    "sacpo": Method(STEPWISE, "SACPO DPO(H)->DPO(S), beta/lambda sweep (0.025: 0.685 / 0.805)",
                    {"first": "dpo-h", "loss": "dpo", "target": "safety", "ratios": RATIOS},
                    sweep="ratios", target=STEPWISE_T),
    "sacpo-dpo-kto": Method(STEPWISE, "SACPO DPO(H)->KTO(S), beta/lambda sweep (0.1: 0.660 / 0.524)",
                            {"first": "dpo-h", "loss": "kto", "target": "safety", "ratios": RATIOS},
                            sweep="ratios", target=STEPWISE_T),
    "sacpo-kto-dpo": Method(STEPWISE, "SACPO KTO(H)->DPO(S), beta/lambda sweep (0.01: 0.595 / 0.856)",
                            {"first": "kto-h", "loss": "dpo", "target": "safety", "ratios": RATIOS},
                            sweep="ratios", target=STEPWISE_T),
    "sacpo-s-first": Method(STEPWISE, "SACPO DPO(S)->DPO(H), safety first (0.1: 0.672 / 0.807)",
                            {"first": "dpo-s", "loss": "dpo", "target": "helpfulness", "ratios": RATIOS},
                            sweep="ratios", target=STEPWISE_T),
    "psacpo": Method(MERGE, "P-SACPO: (1-q) DPO(H) + q DPO(H)->DPO(S)@0.01 (q 0.75: 0.764 / 0.768)",
                     {"a": "dpo-h", "b": "sacpo@0.01", "weights": WEIGHTS}, sweep="weights", target=MERGE_T),
    "naive-merge": Method(MERGE, "naive merging: (1-q) DPO(H) + q DPO(S) (q 0.75: 0.694 / 0.690)",
                          {"a": "dpo-h", "b": "dpo-s", "weights": WEIGHTS}, sweep="weights", target=MERGE_T),
    "saferlhf": Method(RL, "Safe RLHF PPO-Lagrangian, reward + cost model (beaver-7b-v1.0: 0.596 / 0.692)",
                       {"algorithm": "saferlhf"}, target=RL_T),
    "repo": Method(RL, "RePO: PPO with the rectified per-prompt penalty max(C, 0); lambda by dual ascent on the "
                       "mean rectified cost (our reading of the paper; not in SACPO's tables)",
                   {"algorithm": "repo"}, target=RL_T),
    "mocan": Method("safealign.methods.mocan:mocan",
                    "MoCAN: lambda* from the dual over pi_ref samples scored by reward/cost models, then one DPO run "
                    "on pairs ranked by r + lambda* g (CAN, REFERENCE §7; not in SACPO's tables)",
                    {"beta": 0.1, "threshold": 0.0}, target="safealign.methods.mocan:mocan_target"),
}


def check_sweep(name: str, settings: dict, sweep: str, *refs: str) -> None:
    """A sweep is a non-empty list of numbers and the methods it builds on are named by strings."""
    points = settings[sweep]
    if not isinstance(points, list) or not points or \
            not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in points):
        raise BenchError(f"methods.{name}.{sweep} = {points!r} must be a list of numbers, e.g. [0.1, 0.01]")
    for ref in refs:
        if not isinstance(settings[ref], str):
            raise BenchError(f"methods.{name}.{ref} = {settings[ref]!r} must be a method name, e.g. 'dpo-h'")
