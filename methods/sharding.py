"""FSDP full shard for the suite's own training loops (the PPO-Lagrangian's six models), on PyTorch's FSDP2.

`accelerate launch` with an FSDP config (launch_configs/fsdp.yaml) starts the processes and says so in
ACCELERATE_USE_FSDP; the loop then shards each model itself with `torch.distributed.fsdp.fully_shard`, the call
accelerate's FSDP2 plugin makes, because accelerate turns FSDP off on a machine without GPUs while fully_shard
runs on CPU processes too (gloo), so the CPU tests exercise the same path a GPU cluster takes. Each decoder layer
is its own shard group and the rest of the model (embeddings, final norm, heads) the root's: parameters,
gradients and optimiser states are 1/N per process, and a layer's weights are gathered only while it runs.
Trained and frozen models are sharded alike. Full (unsharded) state dicts are gathered for checkpoints and the
saved model with torch.distributed.checkpoint's state-dict helpers.
"""
from __future__ import annotations

import contextlib
import os

import torch


def requested() -> bool:
    """Whether this process was launched with others under an FSDP config (accelerate launch sets
    ACCELERATE_USE_FSDP from the config file, torch's launcher WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and \
        os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


@contextlib.contextmanager
def whole_loading():
    """Every process loads the whole checkpoint (then keeps its shard). Under an FSDP launch with
    fsdp_cpu_ram_efficient_loading, transformers loads real weights on rank 0 only and leaves the other ranks'
    for FSDP to broadcast, which accelerate's plugin does and fully_shard does not (measured: rank 1's shards
    were not the checkpoint's)."""
    key = "FSDP_CPU_RAM_EFFICIENT_LOADING"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key)
        else:
            os.environ[key] = before


def shard(model, root=None, bf16: bool = False) -> None:
    """fully_shard every decoder layer of `model`, then `root` (default: the model; an EndScorer around it when the
    model is called through its parts, so that the root's parameters are gathered for that call). With `bf16` the
    gathered weights are cast to bf16 for compute and gradients reduced in float32 (FSDP2's MixedPrecisionPolicy);
    the shards themselves stay in their loaded dtype (float32 master weights for a trained model)."""
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else \
        MixedPrecisionPolicy()
    for layer in getattr(model, model.base_model_prefix).layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(root if root is not None else model, mp_policy=policy)


def local_share(model) -> float:
    """The share of a model's parameters this process holds."""
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())
    return local / max(1, sum(p.numel() for p in model.parameters()))


def report(acc, models: dict) -> None:
    """One line on the main process's output (a launched stage's launch.log): what each process holds."""
    if acc.is_main_process:
        shares = ", ".join(f"{name} {local_share(m):.0%}" for name, m in models.items())
        print(f"FSDP over {acc.num_processes} processes; process 0 holds {shares} of the parameters", flush=True)


def full_model_state(model) -> dict:
    """The whole model's state dict, gathered on every process (a collective call), kept on the CPU."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_state(model, opt) -> tuple[dict, dict]:
    """(model, optimiser) full state dicts for a checkpoint (collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
    return get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(model, opt, model_state: dict, opt_state: dict) -> None:
    """Spread full state dicts (as full_state wrote them) over the shards again (collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict
    set_state_dict(model, opt, model_state_dict=model_state, optim_state_dict=opt_state,
                   options=StateDictOptions(full_state_dict=True))


def clip(acc, params, max_norm: float, sharded: bool) -> None:
    """Gradient clipping by the global norm: accelerate's for whole (or DDP) models; torch's for sharded (DTensor)
    gradients, whose norm it reduces over the processes."""
    if sharded:
        torch.nn.utils.clip_grad_norm_(list(params), max_norm)
    else:
        acc.clip_grad_norm_(params, max_norm)
