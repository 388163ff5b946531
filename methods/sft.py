"""SFT: the reference policy pi_ref. On `paper` it is a given checkpoint (alpaca-7b-reproduced); on the
offline benchmarks it is a base model fine-tuned with TRL's SFTTrainer on the dataset's own responses,
which play the part of the Alpaca-7B answers that PKU-SafeRLHF was built from."""
from __future__ import annotations

from pathlib import Path

from safealign.methods.training import TrainConfig, peft_kwargs, train_and_save, trainer_args


def sft_rows(rows: list[dict], template: str) -> list[dict]:
    out = []
    for row in rows:
        for i in (0, 1):
            out.append({"prompt": template.format(input=row["prompt"]), "completion": " " + row[f"response_{i}"]})
    return out


def train_sft(cfg: TrainConfig, base: Path, rows: list[dict], template: str, work: Path, seed: int) -> None:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from safealign.models import load_policy
    model, tok = load_policy(base, for_training=True)
    args = trainer_args(SFTConfig, cfg, work, seed, completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(sft_rows(rows, template)),
                         processing_class=tok, **peft_kwargs(cfg))
    train_and_save(trainer, tok, work)


def sft_stage(job) -> None:
    from safealign.pipeline import train_rows
    c = job.config
    train_sft(TrainConfig.from_dict(c["train"], "sft"), job.inputs["base"].model, train_rows(job), c["template"],
              job.work, c["seed"])
    if c.get("dtype"):
        save_in_dtype(job.work / "model", c["dtype"])


def save_in_dtype(folder: Path, dtype: str) -> None:
    """Re-save pi_ref's weights in `dtype` ([policy] dtype), so later stages load it as they load a hub checkpoint
    stored that way (alpaca-7b-reproduced's config.json says torch_dtype bfloat16). Written beside the folder
    first: the loaded weights may still map the old file."""
    import os
    import shutil

    import torch
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM
    state = PartialState()
    if state.is_main_process:
        tmp = folder.with_name(folder.name + ".cast")
        AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).save_pretrained(tmp)
        for old in folder.glob("model*.safetensors*"):
            old.unlink()
        for new in tmp.iterdir():
            os.replace(new, folder / new.name)
        shutil.rmtree(tmp)
    state.wait_for_everyone()


def reference(run, name: str, params: dict) -> list:
    """The `sft` method: the reference policy itself, evaluated like any other model."""
    return [(name, run.reference)]


def reference_target(run, name: str, params: dict) -> list:
    """pi_ref is its own optimum: its distance on the exact benchmark checks the read-off itself (0 up to float)."""
    return [(name, {"a": 0.0, "b": 0.0, "loss": "sft", "front": None})]
