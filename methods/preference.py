"""One preference-optimisation step with TRL: DPO or KTO, on helpfulness or safety labels.

This is every box of SACPO's pipeline: DPO(H) is step(loss="dpo", target="helpfulness", beta=0.1) from
pi_ref; SACPO's second step is the same function with the step-1 model as both the starting policy and the
frozen reference and beta/lambda as its KL coefficient (SACPO Theorem 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safealign.methods.training import TrainConfig, train_and_save, trainer_args

LOSSES = ("dpo", "kto")
TARGETS = ("helpfulness", "safety")


@dataclass
class StepConfig(TrainConfig):
    loss: str = "dpo"             # "dpo" (sigmoid loss, TRL's default) | "kto"
    target: str = "helpfulness"   # which label: better_response_id | safer_response_id / is_response_i_safe
    beta: float = 0.1             # KL coefficient; beta/lambda in SACPO's second step


def label_column(target: str) -> str:
    return "better_response_id" if target == "helpfulness" else "safer_response_id"


def dpo_pairs(rows: list[dict], target: str, template: str) -> list[dict]:
    """DPO(H): chosen = response_{better_response_id}; DPO(S): chosen = response_{safer_response_id}."""
    col, out = label_column(target), []
    for row in rows:
        win = row[col]
        out.append({"prompt": template.format(input=row["prompt"]), "chosen": " " + row[f"response_{win}"],
                    "rejected": " " + row[f"response_{1 - win}"]})
    return out


def train_step(cfg: StepConfig, policy: Path, reference: Path, rows: list[dict], template: str, work: Path,
               seed: int) -> None:
    """Train `policy` against the frozen `reference` and save the result to work/model."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from safealign.models import load_policy
    model, tok = load_policy(policy, for_training=True)
    ref, _ = load_policy(reference)
    args = trainer_args(DPOConfig, cfg, work, seed, beta=cfg.beta, loss_type=["sigmoid"])
    trainer = DPOTrainer(model=model, ref_model=ref, args=args,
                         train_dataset=Dataset.from_list(dpo_pairs(rows, cfg.target, template)), processing_class=tok)
    train_and_save(trainer, tok, work)


def one_step(run, name: str, params: dict) -> list:
    """A one-step method (DPO(H), KTO(H), DPO(S)): a single step from pi_ref with pi_ref as reference."""
    cfg = run.step_config(name, params)
    return [(name, run.align(name, cfg, policy=run.reference, reference=run.reference))]
