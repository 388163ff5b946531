"""FSDP full shard for the suite's own training loops (the PPO-Lagrangian's six models), on PyTorch's FSDP2.

`accelerate launch` with an FSDP config (launch_configs/fsdp.yaml) starts the processes and says so in
ACCELERATE_USE_FSDP; the loop then shards each model itself with `torch.distributed.fsdp.fully_shard`, the call
accelerate's FSDP2 plugin makes, because accelerate turns FSDP off on a machine without GPUs while fully_shard
runs on CPU processes too (gloo), so the CPU tests exercise the same path a GPU cluster takes. Each decoder layer
is its own shard group and the rest of the model (embeddings, final norm, heads) the root's: parameters,
gradients and optimiser states are 1/N per process, and a layer's weights are gathered only while it runs.
Trained and frozen models are sharded alike. Only process 0 reads a
checkpoint's weights; the others build the model on the meta device and get their shards from it (load_on_first,
spread), one model at a time. Full (unsharded) state dicts are gathered for checkpoints and the
saved model with torch.distributed.checkpoint's state-dict helpers.
"""
from __future__ import annotations

import os

import torch


def requested() -> bool:
    """Whether this process was launched with others under an FSDP config (accelerate launch sets
    ACCELERATE_USE_FSDP from the config file, torch's launcher WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and \
        os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def first_process() -> bool:
    """Process 0 of the launch: the one that reads checkpoints under FSDP (load_on_first)."""
    return torch.distributed.get_rank() == 0


def load_on_first(load, build):
    """The model from `load()` on process 0 only, the one process that reads the weight files; every other
    process gets `build()` (the same model from its config) on the meta device, without memory, to be filled
    from process 0 by `spread` once sharded: one whole model per job instead of one per process. Collective.
    A BenchError on process 0 is raised on every process, and every process continues with process 0's torch
    random state (loading a fresh head draws from it), as if each had loaded the model itself."""
    import torch.distributed as dist

    from safealign import BenchError
    model, failure = None, None
    if first_process():
        try:
            model = load()
        except BenchError as e:
            failure = str(e)
    outcome = [failure, torch.get_rng_state()]
    dist.broadcast_object_list(outcome, src=0)
    if outcome[0] is not None:
        raise BenchError(outcome[0])
    if model is None:
        with torch.device("meta"):
            model = build()
    torch.set_rng_state(outcome[1])
    return model


def spread(model, root, device, bf16: bool = False) -> None:
    """Shard `model` (`shard`), then fill every process's shards from process 0's loaded weights
    (torch.distributed.checkpoint's set_model_state_dict with broadcast_from_rank0, one tensor at a time) and
    copy process 0's buffers (the rotary frequencies are in no state dict), so that every process holds what it
    would hold had it loaded the checkpoint itself. Collective; a model built differently from process 0's
    (names, shapes or dtypes) is refused before anything is sent."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    from safealign import BenchError
    root = model if root is None else root
    mine = [(k, tuple(v.shape), str(v.dtype)) for k, v in root.state_dict().items()]
    theirs = [mine]
    dist.broadcast_object_list(theirs, src=0)
    if theirs[0] != mine:
        raise BenchError(f"{type(model).__name__} on process {dist.get_rank()} is not process 0's (parameter names, "
                         "shapes or dtypes differ): give every process the same checkpoint config")
    full = root.state_dict() if first_process() else {}
    shard(model, root, bf16)
    if not first_process():
        root.to_empty(device=device)
    set_model_state_dict(root, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    for buffer in root.buffers():
        dist.broadcast(buffer, src=0)


def causal_lm_skeleton(path, dtype=None):
    """A causal LM as AutoModelForCausalLM.from_pretrained(path, dtype=dtype) builds it, from the checkpoint's
    config (and generation config) only: the weights stay unread. `dtype` None: the stored one."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from safealign.models import stored_dtype
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(path)), dtype=dtype or stored_dtype(path))
    try:            # as from_pretrained: the checkpoint's generation config where it has one
        model.generation_config = GenerationConfig.from_pretrained(str(path))
    except OSError:
        pass
    return model.eval()         # as from_pretrained returns it (train mode would switch dropout on)


def score_model_skeleton(path, head: str = "sequence", dtype=None):
    """A score model as methods/score_model.py's load_score_model builds it (one output, a head with a bias),
    from the checkpoint's config only. `dtype` None: the stored one."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

    from safealign.methods.score_model import set_head
    from safealign.models import stored_dtype
    config = AutoConfig.from_pretrained(str(path))
    config.num_labels = 1
    cls = AutoModelForSequenceClassification if head == "sequence" else AutoModelForTokenClassification
    model = cls.from_config(config, dtype=dtype or stored_dtype(path))
    set_head(model, torch.empty(1, config.hidden_size), None)
    return model.eval()         # as from_pretrained returns it (a token head's dropout stays off)


def shard(model, root=None, bf16: bool = False) -> None:
    """fully_shard every decoder layer of `model`, then `root` (default: the model; an EndScorer around it when the
    model is called through its parts, so that the root's parameters are gathered for that call). With `bf16` the
    gathered weights are cast to bf16 for compute and gradients reduced in float32 (FSDP2's MixedPrecisionPolicy);
    the shards themselves stay in their loaded dtype (float32 master weights for a trained model)."""
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
