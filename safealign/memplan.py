"""Memory per GPU and GPU-hours of a training or generation stage, before anything runs (`bench plan`).

Pure arithmetic on a model's shape and a stage's settings; every rule is the standard accounting it names:
- parameters of a Llama decoder (embedding, per layer q/k/v/o + gate/up/down + two RMSNorms, final norm, head);
- mixed-precision AdamW keeps 16 bytes per trained parameter: bf16 weights (2) and gradients (2), fp32 master
  weights, first and second moments (12) (ZeRO, Rajbhandari et al. 2020, §3.1); a frozen model keeps its bf16
  weights (2); FSDP full shard and ZeRO-3 divide all of it over the GPUs (ZeRO stage 3); DDP divides nothing;
  ZeRO-3 with optimizer offload keeps only the sharded bf16 weights and gradients (4) on the GPU;
- activations kept for the backward pass: 34 bytes x tokens x hidden per layer with FlashAttention (no s^2 term;
  Korthikanti et al. 2022, Table 2, bf16), 2 x tokens x hidden per layer with activation checkpointing (the layer
  inputs) plus one layer's full set; plus the fp32 logits (4 x tokens x vocab) the loss reads;
- LoRA trains adapters of rank r on the attention projections (r x (in + out) each, 16 bytes per parameter) over
  bf16 base weights; QLoRA stores the base in 4-bit NF4 with double quantisation (about 4.13 bits a parameter,
  Dettmers et al. 2023) and still needs bf16 activations;
- generation: whole bf16 weights and the batch's KV cache (2 x 2 bytes x layers x kv width per token); decoding
  reads every weight once per step, so its time is the larger of FLOPs / (peak x MFU) and reads / bandwidth;
- time: 6 x trained parameters x tokens FLOPs for a forward and backward pass, 2 x parameters x tokens for a
  frozen model's forward (Kaplan et al. 2020), at `mfu` of the GPU's peak dense bf16 FLOP/s.
"""
from __future__ import annotations

from dataclasses import dataclass

GIB = 2 ** 30
STRATEGIES = ("ddp", "fsdp", "zero3", "zero3-offload", "lora", "qlora")
SHARDED = ("fsdp", "zero3", "zero3-offload")
ADAPTERS = ("lora", "qlora")
ADAM_BYTES = 16          # bf16 weight + bf16 grad + fp32 master, m, v
FROZEN_BYTES = 2         # bf16
NF4_BYTES = 4.127 / 8    # 4-bit NF4 + double-quantised constants


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool = False


def params(s: Shape, head_outputs: int | None = None) -> int:
    """Parameters of a Llama decoder; `head_outputs` replaces the vocabulary head (1 for a reward/cost model)."""
    kv = s.hidden * s.kv_heads // s.heads
    layer = 2 * s.hidden * s.hidden + 2 * s.hidden * kv + 3 * s.hidden * s.intermediate + 2 * s.hidden
    head = s.hidden * (s.vocab if head_outputs is None else head_outputs)
    tied = s.tied and head_outputs is None
    return s.vocab * s.hidden + s.layers * layer + s.hidden + (0 if tied else head)


def lora_params(s: Shape, rank: int) -> int:
    """LoRA adapters on q, k, v, o of every layer: rank x (in + out) each."""
    kv = s.hidden * s.kv_heads // s.heads
    return s.layers * rank * (2 * (s.hidden + s.hidden) + 2 * (s.hidden + kv))


def trained_bytes(n: int, strategy: str, gpus: int, shape: Shape | None = None, rank: int = 16) -> float:
    """Weights, gradients and optimiser states of one trained model, per GPU."""
    if strategy in ADAPTERS:
        base = n * (NF4_BYTES if strategy == "qlora" else FROZEN_BYTES)
        return base + ADAM_BYTES * lora_params(shape, rank)
    if strategy == "zero3-offload":          # fp32 master weights and Adam moments live in CPU memory
        return (ADAM_BYTES - 12) * n / gpus
    return ADAM_BYTES * n / (gpus if strategy in SHARDED else 1)


def frozen_bytes(n: int, strategy: str, gpus: int) -> float:
    """A frozen model's weights per GPU (a reference, reward or cost model)."""
    per = NF4_BYTES if strategy == "qlora" else FROZEN_BYTES
    return per * n / (gpus if strategy in SHARDED else 1)


def activation_bytes(s: Shape, tokens: int, checkpointing: bool) -> float:
    """Activations of `tokens` tokens (micro-batch x length) kept for the backward pass, plus the fp32 logits."""
    per_layer = 34 * tokens * s.hidden
    kept = (2 * tokens * s.hidden * s.layers + per_layer) if checkpointing else per_layer * s.layers
    return kept + 4 * tokens * s.vocab


def forward_bytes(s: Shape, tokens: int) -> float:
    """A forward pass without backward (reference log-probs, generation's prefill): one layer's activations at a
    time and the logits."""
    return 34 * tokens * s.hidden + 4 * tokens * s.vocab


def kv_cache_bytes(s: Shape, tokens: int) -> float:
    """bf16 keys and values of every layer for `tokens` tokens (a generation batch x its length)."""
    return 2 * 2 * s.layers * (s.hidden * s.kv_heads // s.heads) * tokens


def gpu_hours(flops: float, gpu_tflops: float, mfu: float) -> float:
    return flops / (gpu_tflops * 1e12 * mfu) / 3600


def train_flops(trained: int, frozen: int, tokens: float, adapters: bool = False) -> float:
    """6 N T for the trained model(s) (4 N T under adapters: no weight gradients for the frozen base) and 2 N T
    for the frozen ones' forward passes."""
    return (4 if adapters else 6) * trained * tokens + 2 * frozen * tokens
