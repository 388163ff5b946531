"""What every TRL-based stage shares: arguments from a config, checkpoint resume, and saving the result."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path

from safealign import BenchError
from safealign.models import cast_checkpoint, save_dtype


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
    bf16: bool = False            # compute under bf16 autocast (CPU too); the trained weights stay float32 masters
    gradient_checkpointing: bool = True   # TRL's default, for 7B models; on a tiny model only ~20% more compute
    lora_rank: int = 0            # > 0: train LoRA adapters of this rank (peft) on lora_modules, merged when saved
    lora_alpha: float = 16.0
    lora_modules: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    @classmethod
    def from_dict(cls, params: dict, where: str):
        return from_dict(cls, params, where)


def from_dict(cls, params: dict, where: str):
    """Build a config dataclass, checking every key and its type first: an unknown key or a wrong type is one
    line naming `where.key` and what is valid, never a TypeError deep inside a stage hours later."""
    import typing
    if not isinstance(params, dict):
        raise BenchError(f"[{where}] must be a table of settings, got {params!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key, value in params.items():
        if key not in names:
            raise BenchError(f"[{where}]: unknown setting '{key}' ({where}.{key}); valid: {', '.join(sorted(names))}")
        if not type_ok(value, hints[key]):
            raise BenchError(f"{where}.{key} = {value!r} has the wrong type: expected {type_name(hints[key])}")
    return cls(**params)


def type_ok(value, hint) -> bool:
    """Whether a TOML value fits a dataclass field's annotation (int for float is fine; bool is not a number)."""
    import types
    import typing
    if hint is typing.Any:
        return True
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    origin = typing.get_origin(hint) or hint
    if origin is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, list)
    return isinstance(value, origin)


def type_name(hint) -> str:
    import typing
    args = typing.get_args(hint)
    if args and (typing.get_origin(hint) is not None and typing.get_origin(hint) not in (list, dict, tuple)):
        return " or ".join(type_name(a) for a in args)
    return {type(None): "nothing"}.get(hint, getattr(typing.get_origin(hint) or hint, "__name__", str(hint)))


def trainer_args(cls, cfg: TrainConfig, work: Path, seed: int, **extra):
    import torch

    from safealign.tracking import trainer_report_to    # off unless --report-to; a TensorBoard folder that stays
    return cls(output_dir=str(work / "trainer"), num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
               per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
               lr_scheduler_type=cfg.lr_scheduler, warmup_steps=float(cfg.warmup_ratio), max_length=cfg.max_length,
               seed=seed, data_seed=seed, logging_steps=5, save_strategy="steps", save_steps=cfg.save_steps,
               save_total_limit=1, report_to=trainer_report_to(work), use_cpu=not torch.cuda.is_available(),
               bf16=cfg.bf16, gradient_checkpointing=cfg.gradient_checkpointing,
               disable_tqdm=False, **extra)


def peft_kwargs(cfg: TrainConfig) -> dict:
    """{"peft_config": ...} for a TRL trainer when cfg trains LoRA adapters, else {}. TRL's preference trainers
    then need no reference model: the reference is the policy with its adapters off."""
    if cfg.lora_rank <= 0:
        return {}
    return {"peft_config": lora_config(cfg.lora_rank, cfg.lora_alpha, cfg.lora_modules, "CAUSAL_LM")}


def lora_config(rank: int, alpha: float, modules: list, task: str):
    """peft's LoraConfig for one model. A score model or critic (task SEQ_CLS / TOKEN_CLS) also trains its
    scalar head `score` in full, as a new head must be; with its adapters off it is the model it started from."""
    from peft import LoraConfig
    head = {"modules_to_save": ["score"]} if task != "CAUSAL_LM" else {}
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(modules), task_type=task,
                      **head)


def train_and_save(trainer, tokenizer, work: Path) -> None:
    """Train (resuming from the newest checkpoint of an interrupted attempt), then save the final model
    and the loss curve; the bulky checkpoints go once the model is saved. Adapters are merged into the weights
    first, so every later stage (a second step, a merge, generation) reads a plain checkpoint."""
    ckpt_dir = work / "trainer"
    resume = ckpt_dir.exists() and any(ckpt_dir.glob("checkpoint-*"))
    quiet_progress(trainer)
    trainer.train(resume_from_checkpoint=True if resume else None)
    # Under `accelerate launch` every rank runs this; only the main one writes (save_model gathers a sharded
    # model on every rank and writes on the main one, so all ranks call it).
    main = trainer.is_world_process_zero()
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):                   # a peft model
        if main:
            model.merge_and_unload().save_pretrained(str(work / "model"))
    else:
        trainer.save_model(str(work / "model"))
    if main:
        # the float32 masters saved in the dtype the policy came in (safealign.models.load_policy)
        cast_checkpoint(work / "model", save_dtype(model))
        tokenizer.save_pretrained(str(work / "model"))
        (work / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()


def quiet_progress(trainer) -> None:
    """One progress bar per stage on the terminal, named after the stage and showing the latest loss; the
    per-step log dictionaries that TRL would print between bar updates go to run.log instead."""
    from tqdm.auto import tqdm
    from transformers.trainer_callback import ProgressCallback

    from safealign.stages import stage_label, stage_log

    class StageProgress(ProgressCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.training_bar = tqdm(total=state.max_steps, desc=stage_label() or "train", unit="step")
            self.current_step = 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or self.training_bar is None:
                return
            logs = {k: v for k, v in (logs or {}).items() if k != "total_flos"}
            stage_log(f"step {state.global_step}: {json.dumps(logs, default=str)}")
            if "loss" in logs:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}")

    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(StageProgress)
