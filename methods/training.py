"""What every TRL-based stage shares: arguments from a config, checkpoint resume, and saving the result."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

from safealign import BenchError


@dataclass
class TrainConfig:
    """Optimiser settings shared by SFT and every alignment step (the paper: 3 epochs, lr 2e-5, cosine,
    warmup 0.03, max_length 512); benchmark files set their own."""
    epochs: float = 3
    learning_rate: float = 2e-5
    batch_size: int = 8
    grad_accum: int = 1
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    max_length: int = 512
    save_steps: int = 200
    bf16: bool = False

    @classmethod
    def from_dict(cls, params: dict, where: str):
        return from_dict(cls, params, where)


def from_dict(cls, params: dict, where: str):
    """Build a config dataclass, naming the section and the valid keys when a key is unknown."""
    names = {f.name for f in fields(cls)}
    unknown = [k for k in params if k not in names]
    if unknown:
        raise BenchError(f"[{where}]: unknown setting '{unknown[0]}'; valid: {', '.join(sorted(names))}")
    return cls(**params)


def trainer_args(cls, cfg: TrainConfig, work: Path, seed: int, **extra):
    import torch
    return cls(output_dir=str(work / "trainer"), num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
               per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
               lr_scheduler_type=cfg.lr_scheduler, warmup_steps=float(cfg.warmup_ratio), max_length=cfg.max_length,
               seed=seed, data_seed=seed, logging_steps=5, save_strategy="steps", save_steps=cfg.save_steps,
               save_total_limit=1, report_to="none", use_cpu=not torch.cuda.is_available(),
               bf16=cfg.bf16 and torch.cuda.is_available(), disable_tqdm=False, **extra)


def train_and_save(trainer, tokenizer, work: Path) -> None:
    """Train (resuming from the newest checkpoint of an interrupted attempt), then save the final model
    and the loss curve; the bulky checkpoints go once the model is saved."""
    ckpt_dir = work / "trainer"
    resume = ckpt_dir.exists() and any(ckpt_dir.glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if resume else None)
    trainer.save_model(str(work / "model"))
    tokenizer.save_pretrained(str(work / "model"))
    (work / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    shutil.rmtree(ckpt_dir, ignore_errors=True)
