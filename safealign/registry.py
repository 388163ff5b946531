"""The methods registry: one flat table from a name to the function that runs it (imported only when it
runs), the paper row it reproduces, and its defaults. Benchmark files override the defaults per method in
their [methods.<name>] sections; `--set methods.<name>.<key>=value` overrides those."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Method:
    run: str                   # "module:function"; the function takes (run, name, params) and returns models
    paper_row: str             # what it reproduces (SACPO Table 3, win rates vs SFT: helpfulness / harmlessness)
    defaults: dict = field(default_factory=dict)


METHODS = {
    "sft": Method("safealign.methods.sft:reference",
                  "SFT reference pi_ref (alpaca-7b-reproduced); the baseline of every win rate"),
    "dpo-h": Method("safealign.methods.preference:one_step",
                    "DPO(H) beta 0.1: one DPO step on helpfulness labels (0.792 / 0.490)",
                    {"loss": "dpo", "target": "helpfulness", "beta": 0.1}),
}
