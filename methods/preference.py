"""One preference-optimisation step with TRL: DPO or KTO, on helpfulness or safety labels.

This is every box of SACPO's pipeline: DPO(H) is step(loss="dpo", target="helpfulness", beta=0.1) from
pi_ref; SACPO's second step is the same function with the step-1 model as both the starting policy and the
frozen reference and beta/lambda as its KL coefficient (SACPO Theorem 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safealign import BenchError
from safealign.methods.training import TrainConfig, peft_kwargs, train_and_save, trainer_args

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
                 seed: int, ref_logps: list[dict] | None = None):
    """A TRL trainer for one step: `policy` is trained, `reference` is loaded separately and stays frozen. With
    `ref_logps` (a DPO step's reference log-probabilities, from reference_logps) the reference is never loaded."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    from safealign.models import load_policy
    peft = peft_kwargs(cfg)
    if peft and Path(policy) != Path(reference):
        raise BenchError(f"LoRA (lora_rank = {cfg.lora_rank}) needs the step to start from its own reference (the "
                         "reference is the policy with its adapters off): set lora_rank = 0 for this step")
    model, tok = load_policy(policy, for_training=True)
    if cfg.loss == "dpo" and ref_logps is not None:
        args = trainer_args(DPOConfig, cfg, work, seed, beta=cfg.beta, loss_type=["sigmoid"],
                            precompute_ref_log_probs=True)
        data = Dataset.from_list(with_ref_logps(dpo_pairs(rows, cfg.target, template), ref_logps))
        return shared_reference_trainer()(model=model, ref_model=None, args=args, train_dataset=data,
                                          processing_class=tok, **peft), tok
    ref = None if peft else load_policy(reference)[0]
    if cfg.loss == "dpo":
        args = trainer_args(DPOConfig, cfg, work, seed, beta=cfg.beta, loss_type=["sigmoid"])
        data = Dataset.from_list(dpo_pairs(rows, cfg.target, template))
        return DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=data, processing_class=tok,
                          **peft), tok
    examples, undesirable_weight = kto_rows(rows, cfg.target, template)
    args = trainer_args(KTOConfig, cfg, work, seed, beta=cfg.beta, undesirable_weight=undesirable_weight)
    # KTO reads its batches in order (the KL term pairs neighbours), so the shuffle happens here, seeded.
    data = Dataset.from_list(examples).shuffle(seed=seed)
    return KTOTrainer(model=model, ref_model=ref, args=args, train_dataset=data, processing_class=tok, **peft), tok


def train_step(cfg: StepConfig, policy: Path, reference: Path, rows: list[dict], template: str, work: Path,
               seed: int, ref_logps: list[dict] | None = None) -> None:
    """Train `policy` against the frozen `reference` and save the result to work/model."""
    trainer, tok = make_trainer(cfg, policy, reference, rows, template, work, seed, ref_logps)
    train_and_save(trainer, tok, work)


# -- a sweep's shared reference (issue 11) ---------------------------------------------------------------------
# Every point of a step-2 sweep trains on the same pairs against the same frozen step-1 model, so the reference's
# log-probabilities are one computation: TRL's own precompute pass (DPOConfig precompute_ref_log_probs) runs once
# in a `ref-logps` stage, and each point reads them from its dataset instead of running the reference every step.
REF_KEYS = ("target", "max_length", "batch_size")     # all the reference pass depends on (the batch: its padding)


def reference_logps(cfg: StepConfig, reference: Path, rows: list[dict], template: str, work: Path) -> list[dict]:
    """[{pair, chosen, rejected}]: log pi_ref of each pair's chosen and rejected answer (summed over the answer's
    tokens, as DPOTrainer computes them), for the pairs TRL keeps (it drops prompts longer than max_length)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from safealign.models import load_policy
    model, tok = load_policy(reference)
    args = trainer_args(DPOConfig, cfg, work, 0, beta=cfg.beta, loss_type=["sigmoid"], precompute_ref_log_probs=True)
    pairs = [{**p, "pair": i} for i, p in enumerate(dpo_pairs(rows, cfg.target, template))]
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(pairs),
                         processing_class=tok)       # the precompute pass runs as the trainer is built
    ds = trainer.train_dataset
    return [{"pair": int(i), "chosen": float(a), "rejected": float(b)}
            for i, a, b in zip(ds["pair"], ds["ref_chosen_logps"], ds["ref_rejected_logps"])]


def with_ref_logps(pairs: list[dict], ref_logps: list[dict]) -> list[dict]:
    """The pairs the reference pass kept, each with its two log-probabilities as DPOTrainer's columns."""
    if ref_logps and (len(ref_logps) > len(pairs) or max(r["pair"] for r in ref_logps) >= len(pairs)):
        raise BenchError(f"reference log-probabilities of {len(ref_logps)} pairs do not fit these {len(pairs)} "
                         "training pairs: the ref-logps stage was computed on other data")
    return [{**pairs[r["pair"]], "ref_chosen_logps": r["chosen"], "ref_rejected_logps": r["rejected"]}
            for r in ref_logps]


def shared_reference_trainer():
    """DPOTrainer whose precompute pass keeps the reference log-probabilities that came with the dataset."""
    from trl import DPOTrainer

    class SharedReferenceDPOTrainer(DPOTrainer):
        def _precompute_ref_logps(self, dataset, name, batch_size):
            if "ref_chosen_logps" in dataset.column_names:
                return dataset
            return super()._precompute_ref_logps(dataset, name, batch_size)
    return SharedReferenceDPOTrainer


def ref_logps_stage(job) -> None:
    """The `ref-logps` stage: inputs.reference's log-probabilities of the data's training pairs (reference_logps)."""
    from safealign.pipeline import train_rows
    from safealign.stages import write_jsonl
    c = job.config
    cfg = StepConfig.from_dict(c["step"], "step")
    write_jsonl(job.work / "ref_logps.jsonl",
                reference_logps(cfg, job.inputs["reference"].model, train_rows(job), c["template"], job.work))


def plan_reference_logps(run, cfg: StepConfig, reference):
    """The `ref-logps` stage of a DPO step against `reference`: keyed on REF_KEYS only, so every beta/lambda (and
    every method that re-plans the same step, P-SACPO's sacpo@0.01) finds the one stage."""
    step = {k: getattr(cfg, k) for k in REF_KEYS}
    return run.stage("ref-logps", "safealign.methods.preference:ref_logps_stage",
                     {"step": step, "template": run.template, "limit": run.limit},
                     {"reference": reference, "data": run.data_stage}, f"reference log-probs ({reference.label})")


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
    shared = job.inputs.get("ref_logps")
    train_step(cfg, job.inputs["policy"].model, job.inputs["reference"].model, rows, c["template"], job.work,
               c["seed"], read_jsonl(shared / "ref_logps.jsonl") if shared is not None else None)


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
