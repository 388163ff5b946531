"""One preference-optimisation step with TRL: DPO or KTO, on helpfulness or safety labels.

This is every box of SACPO's pipeline: DPO(H) is step(loss="dpo", target="helpfulness", beta=0.1) from
pi_ref; SACPO's second step is the same function with the step-1 model as both the starting policy and the
frozen reference and beta/lambda as its KL coefficient (SACPO Theorem 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safealign import BenchError
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


def kto_rows(rows: list[dict], target: str, template: str) -> tuple[list[dict], float]:
    """Unpaired KTO examples and the undesirable weight.

    KTO(H): the better response is desirable, the worse undesirable (balanced, weight 1).
    KTO(S): every response is labelled by is_response_i_safe; undesirable_weight = n_safe / n_unsafe
    (the SACPO code's balancing of the absolute safety labels).
    """
    out = []
    for row in rows:
        prompt = template.format(input=row["prompt"])
        for i in (0, 1):
            label = row["better_response_id"] == i if target == "helpfulness" else bool(row[f"is_response_{i}_safe"])
            out.append({"prompt": prompt, "completion": " " + row[f"response_{i}"], "label": label})
    if target == "helpfulness":
        return out, 1.0
    n_safe = sum(r["label"] for r in out)
    if n_safe in (0, len(out)):
        raise BenchError(f"KTO(S) needs both safe and unsafe responses, got {n_safe} safe of {len(out)}")
    return out, n_safe / (len(out) - n_safe)


def make_trainer(cfg: StepConfig, policy: Path, reference: Path, rows: list[dict], template: str, work: Path,
                 seed: int):
    """A TRL trainer for one step: `policy` is trained, `reference` is loaded separately and stays frozen."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    from safealign.models import load_policy
    model, tok = load_policy(policy, for_training=True)
    ref, _ = load_policy(reference)
    if cfg.loss == "dpo":
        args = trainer_args(DPOConfig, cfg, work, seed, beta=cfg.beta, loss_type=["sigmoid"])
        data = Dataset.from_list(dpo_pairs(rows, cfg.target, template))
        return DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=data, processing_class=tok), tok
    examples, undesirable_weight = kto_rows(rows, cfg.target, template)
    args = trainer_args(KTOConfig, cfg, work, seed, beta=cfg.beta, undesirable_weight=undesirable_weight)
    # KTO reads its batches in order (the KL term pairs neighbours), so the shuffle happens here, seeded.
    data = Dataset.from_list(examples).shuffle(seed=seed)
    return KTOTrainer(model=model, ref_model=ref, args=args, train_dataset=data, processing_class=tok), tok


def train_step(cfg: StepConfig, policy: Path, reference: Path, rows: list[dict], template: str, work: Path,
               seed: int) -> None:
    """Train `policy` against the frozen `reference` and save the result to work/model."""
    trainer, tok = make_trainer(cfg, policy, reference, rows, template, work, seed)
    train_and_save(trainer, tok, work)


def sequence_logps(model, tok, prompts: list[str], completions: list[str], batch_size: int = 64):
    """Sum of log pi(completion | prompt) per example, the quantity DPO's implicit reward is built from, over
    the ids TRL trains on (`tokens.prompt_answer_ids`: the tokenizer's BOS, the answer with its EOS)."""
    import torch

    from safealign import tokens
    out = []
    for i in range(0, len(prompts), batch_size):
        split = [tokens.prompt_answer_ids(tok, p, c) for p, c in zip(prompts[i:i + batch_size],
                                                                      completions[i:i + batch_size])]
        ids, mask = tokens.right_padded([p + a for p, a in split], tok.pad_token_id)
        target = torch.zeros_like(mask, dtype=torch.bool)
        for j, (p, a) in enumerate(split):
            target[j, len(p):len(p) + len(a)] = True
        with torch.no_grad():
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None].to(model.device))[..., 0]
        out.append((logp * target[:, 1:].to(model.device)).sum(-1).cpu())
    return torch.cat(out)


def implicit_reward_accuracy(policy: Path, reference: Path, rows: list[dict], target: str, template: str,
                             beta: float) -> float:
    """Share of pairs where the implicit reward beta * log(pi/pi_ref) (DPO §5) ranks the labelled winner first."""
    from safealign.models import load_policy
    pairs = dpo_pairs(rows, target, template)
    prompts = [p["prompt"] for p in pairs]
    logps = {}
    for path in (policy, reference):        # each model loaded once, scoring both sides
        model, tok = load_policy(path)
        for side in ("chosen", "rejected"):
            logps[path, side] = sequence_logps(model, tok, prompts, [p[side] for p in pairs])
        del model
    rewards = {side: beta * (logps[policy, side] - logps[reference, side]) for side in ("chosen", "rejected")}
    return float((rewards["chosen"] > rewards["rejected"]).float().mean())


def step_config(run, name: str, params: dict, defaults: bool = True) -> StepConfig:
    """[train], then the method's settings (registry defaults and its [methods.<name>] section unless `defaults`
    is False), then `params`; checked before anything runs."""
    merged = {**run.config.get("train", {}), **(run.method_settings(name, params) if defaults else params)}
    cfg = StepConfig.from_dict(merged, f"methods.{name}")
    if cfg.loss not in LOSSES or cfg.target not in TARGETS:
        raise BenchError(f"[methods.{name}]: loss must be one of {LOSSES} and target one of {TARGETS}")
    return cfg


def align_stage(job) -> None:
    """The `align` stage: train inputs.policy against the frozen inputs.reference on the data's training pairs, or
    on the pseudo-labelled pairs of a `dual` input (MoCAN)."""
    from safealign.pipeline import train_rows
    from safealign.stages import read_jsonl
    c = job.config
    cfg = StepConfig.from_dict(c["step"], "step")
    dual = job.inputs.get("dual")
    rows = read_jsonl(dual / "relabelled.jsonl") if dual is not None else train_rows(job)
    train_step(cfg, job.inputs["policy"].model, job.inputs["reference"].model, rows, c["template"], job.work,
               c["seed"])


def one_step(run, name: str, params: dict) -> list:
    """A one-step method (DPO(H), KTO(H), DPO(S)): a single step from pi_ref with pi_ref as reference."""
    cfg = step_config(run, name, params)
    return [(name, run.align(name, cfg, policy=run.reference, reference=run.reference))]


def one_step_target(run, name: str, params: dict) -> list:
    """The optimum a one-step method aims at on the exact benchmark: pi_ref exp(r/beta) for a helpfulness step,
    pi_ref exp(g/beta) for a safety step (DPO §4; KTO is measured against the same point, not its own optimum)."""
    cfg = step_config(run, name, params)
    a, b = (1.0 / cfg.beta, 0.0) if cfg.target == "helpfulness" else (0.0, 1.0 / cfg.beta)
    front = (cfg.beta, False) if cfg.target == "helpfulness" else None     # the front its later steps move along
    return [(name, {"a": a, "b": b, "loss": cfg.loss, "front": front})]
