"""Training speed, side by side, on the tiny benchmark's policy shape and its world's 1,282 training pairs with its
[train] settings (2 epochs of batch 32: 82 steps a stage):

- sweep sharing: a 4-point DPO(H)->DPO(S) step-2 sweep as four independent TRL runs (the reference model beside
  the policy in every step) against the suite's way (methods/preference.py: one `ref-logps` pass, then four runs
  that read it);
- no overhead over TRL: the suite's DPO stage (`train_step`, with its progress bar, logs, resumable checkpoints and
  saved model) against a bare TRL `DPOTrainer` given the same model, data and settings, in tokens per second;
  with the share of padding in the batches TRL builds.

The model is left untrained (speed does not depend on what the weights say). A short warm-up step runs first, so
no side pays the one-time imports. The two sides run in this process in turn, on the same threads, with the
same settings: float32 on a CPU (TRL's own configs default to bf16 autocast, which the suite uses only on GPUs).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

SWEEP_GOAL = 0.6
TRL_GOAL = 0.95
ROUNDS = 2


def tiny_case(root: Path):
    """(untrained model folder, the tiny world's splits, template, the tiny benchmark): the tiny policy's shape,
    its tokenizer trained on the world's texts, as a run builds them."""
    from safealign import models, world
    from safealign.config import load_benchmark
    bench = load_benchmark("tiny")
    template, tiny = bench["prompt_template"], bench["policy"]["tiny"]
    splits = world.build(**bench["world"])
    texts = [r[k] for r in splits["train"] for k in ("prompt", "response_0", "response_1")] + [template]
    tok = models.build_tokenizer(texts, tiny["vocab_size"], root / "model")
    models.build_tiny_llama(tok, tiny, bench["seed"], root / "model")
    return root / "model", splits, template, bench


def _step_case(root: Path, quick: bool, target: str):
    from safealign.methods.preference import StepConfig
    model, splits, template, bench = tiny_case(root)
    rows = splits["train"][:96] if quick else splits["train"]
    cfg = StepConfig.from_dict({**bench["train"], "target": target}, "train")
    if quick:
        cfg = replace(cfg, epochs=1)
    _warm_up(cfg, model, rows, template, root / "warm-up")
    return model, rows, template, cfg


def _warm_up(cfg, model: Path, rows: list[dict], template: str, work: Path) -> None:
    from safealign.methods.preference import train_step
    train_step(replace(cfg, epochs=1), model, model, rows[:cfg.batch_size], template, work, seed=0)


def _timed(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def sweep_sharing(quick: bool) -> dict:
    """The reference pass first, then for each beta/lambda an independent run and a run on the shared log-probs,
    one after the other, so a drift in the machine's speed falls on both sides alike."""
    from safealign.methods.preference import reference_logps, train_step
    from safealign.registry import RATIOS
    alone = shared = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, rows, template, cfg = _step_case(root, quick, "safety")
        t0 = time.perf_counter()
        table = reference_logps(cfg, model, rows, template, root / "ref")
        ref_s = time.perf_counter() - t0
        for r in RATIOS:
            alone += _timed(train_step, replace(cfg, beta=r), model, model, rows, template, root / f"alone-{r}", 0)
            shared += _timed(train_step, replace(cfg, beta=r), model, model, rows, template, root / f"shared-{r}", 0,
                             ref_logps=table)
    value = (ref_s + shared) / alone
    steps = -(-len(rows) // cfg.batch_size) * int(cfg.epochs)
    return {"figure": f"sweep sharing ({len(RATIOS)} step-2 points)", "value": value, "unit": "x independent",
            "goal": f"<= {SWEEP_GOAL:g}x", "ok": value <= SWEEP_GOAL,
            "detail": f"independent {alone:.1f} s; shared {ref_s + shared:.1f} s = reference pass {ref_s:.1f} s + "
                      f"{len(RATIOS)} runs {shared:.1f} s ({len(rows)} pairs, {steps} steps each)"}


def bare_trl(cfg, model_dir: Path, rows: list[dict], template: str, work: Path) -> dict:
    """A plain TRL DPO run as its documentation writes one (policy, reference, DPOConfig, DPOTrainer, train, save)
    with the stage's settings; {"tokens", "padded"}: attended and total positions of the batches TRL built."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from safealign.methods.preference import dpo_pairs
    # as the suite's stage (safealign.models.load_policy): the trained policy float32, the frozen one as stored
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    args = DPOConfig(output_dir=str(work), num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
                     per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
                     lr_scheduler_type=cfg.lr_scheduler, warmup_steps=float(cfg.warmup_ratio),
                     max_length=cfg.max_length, seed=0, data_seed=0, beta=cfg.beta, loss_type=["sigmoid"],
                     gradient_checkpointing=cfg.gradient_checkpointing, logging_steps=5, save_strategy="no",
                     report_to="none", use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
                     # TRL's configs default to bf16 (autocast, even on a CPU); the suite's stage passes
                     # cfg.bf16 as set (methods/training.py trainer_args), and "the same settings" means the same.
                     bf16=cfg.bf16)
    trainer = DPOTrainer(model=model, ref_model=ref, args=args,
                         train_dataset=Dataset.from_list(dpo_pairs(rows, cfg.target, template)), processing_class=tok)
    counts = count_padding(trainer)
    from transformers.trainer_callback import PrinterCallback
    trainer.remove_callback(PrinterCallback)      # its per-step dicts on the terminal; the stage logs to run.log
    trainer.train()
    trainer.save_model(str(work / "model"))
    return counts


def count_padding(trainer) -> dict:
    """Wrap the trainer's collator to add up the attended and the total positions of every batch it builds."""
    counts, collate = {"tokens": 0, "padded": 0}, trainer.data_collator

    def counting(examples):
        batch = collate(examples)
        mask = batch["attention_mask"]
        counts["tokens"] += int(mask.sum())
        counts["padded"] += mask.numel()
        return batch
    trainer.data_collator = counting
    return counts


def dpo_vs_trl(quick: bool) -> dict:
    """Bare TRL and the suite's stage in turn, ROUNDS times; each side's fastest round counts (the machine's
    noise only ever slows a run down)."""
    from safealign.methods.preference import train_step
    bare, suite = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, rows, template, cfg = _step_case(root, quick, "helpfulness")
        for i in range(ROUNDS):
            t0 = time.perf_counter()
            counts = bare_trl(cfg, model, rows, template, root / f"bare-{i}")
            bare.append(time.perf_counter() - t0)
            suite.append(_timed(train_step, cfg, model, model, rows, template, root / f"suite-{i}", 0))
    # The same seed, data and settings: both runs train on the same batches, so the same tokens.
    bare_tps, suite_tps = counts["tokens"] / min(bare), counts["tokens"] / min(suite)
    value = suite_tps / bare_tps
    pad = 1 - counts["tokens"] / counts["padded"]
    return {"figure": "DPO stage vs bare TRL", "value": value, "unit": "x TRL tokens/s", "goal": f">= {TRL_GOAL:g}x",
            "ok": value >= TRL_GOAL,
            "detail": f"suite {suite_tps:.0f} tok/s ({min(suite):.1f} s), TRL {bare_tps:.0f} tok/s ({min(bare):.1f} s), "
                      f"best of {ROUNDS}, {counts['tokens']} tokens; padding {pad:.0%} of batch positions"}
