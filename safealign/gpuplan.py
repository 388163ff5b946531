"""`bench plan`: every GPU stage of a run's plan with its memory per GPU and its GPU-hours under a strategy.

It reads the same graph `bench run` would execute (safealign/plan.py), so what it sizes is what would run: the
stage's own batch, length and epochs, whether a step-2 point reads its reference's log-probabilities (then no
reference is held), and how many models an RL stage holds. The arithmetic is safealign/memplan.py's. The data's
size comes from [plan] (the data stage is not built by planning).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from safealign import BenchError
from safealign import memplan as mp

LLAMA_7B = mp.Shape(hidden=4096, layers=32, intermediate=11008, vocab=32000, heads=32, kv_heads=32)
SMOLLM2_135M = mp.Shape(hidden=576, layers=30, intermediate=1536, vocab=49152, heads=9, kv_heads=3, tied=True)
KNOWN_SHAPES = {"PKU-Alignment/alpaca-7b-reproduced": LLAMA_7B, "huggyllama/llama-7b": LLAMA_7B,
                "smollm2-wheel": SMOLLM2_135M, "HuggingFaceTB/SmolLM2-135M-Instruct": SMOLLM2_135M}
NO_GPU = ("world", "exact", "data", "base", "merge", "judge")
FULL_ONLY = ("score-model", "rl")     # the suite's own training loops: DDP, FSDP (fully_shard) or LoRA, no ZeRO
FROZEN_WEIGHT = 2       # bytes a bf16 weight takes to read
PROMPT_TOKENS = 128     # a prompt's tokens in a generation batch's KV cache (the paper's max_prompt_length)
TIGHT = 0.9             # above this share of a GPU's memory a stage is marked tight (allocator, CUDA context)


@dataclass
class Hardware:
    gpus: int = 8
    gpu_memory: float = 80.0       # GiB per GPU
    strategy: str = "fsdp"         # memplan.STRATEGIES: ddp | fsdp | zero3 | zero3-offload | lora | qlora
    gpu_tflops: float = 312.0      # peak dense bf16 (A100: 312; H100 SXM: 989)
    mfu: float = 0.4               # the share of peak a well-tuned run reaches
    gpu_bandwidth: float = 2.0     # TB/s of GPU memory (A100 80GB: 2.0; H100 SXM: 3.35)
    checkpointing: bool = True     # activation (gradient) checkpointing
    lora_rank: int = 16


def shape_of(base: str, tiny: dict) -> mp.Shape:
    """The policy's shape: the tiny Llama's settings, a known hub id, or a local checkpoint's config.json."""
    if base == "tiny":
        t = {"vocab_size": 1024, "hidden_size": 128, "heads": 2, "layers": 2, "intermediate_size": 384, **tiny}
        return mp.Shape(t["hidden_size"], t["layers"], t["intermediate_size"], t["vocab_size"], t["heads"], t["heads"],
                        tied=True)                       # as models.build_tiny_llama builds it
    if base in KNOWN_SHAPES:
        return KNOWN_SHAPES[base]
    config = Path(base) / "config.json"
    if not config.exists():
        raise BenchError(f"bench plan cannot tell the shape of '{base}' offline: give a local checkpoint folder "
                         f"(with config.json) or one of {', '.join(KNOWN_SHAPES)}")
    c = json.loads(config.read_text())
    return mp.Shape(c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"], c["vocab_size"],
                    c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"]),
                    bool(c.get("tie_word_embeddings", False)))


@dataclass
class Need:
    """One stage on the GPU: the models it holds as (parameters, trained?), the tokens of one micro-batch per GPU,
    the FLOPs of the whole stage, and whether it keeps activations for a backward pass."""
    models: list[tuple[int, bool]]
    micro_tokens: int
    flops: float
    backward: bool = True
    note: str = ""
    sharded: bool = True           # False: the stage holds whole copies whatever the strategy (vLLM, TRL's precompute)
    kv_cache: bool = False         # generation: the batch's KV cache instead of training activations
    weight_reads: int = 0          # decoding steps, each reading every weight once (memory-bound)
    strategy: str = ""             # the strategy this stage really runs under, where it differs from the plan's


def need(spec, shape: mp.Shape, pairs: int, eval_prompts: int, hw: Hardware) -> Need | None:
    """What a stage of the plan holds and computes; None for a stage without a GPU."""
    if spec.kind in NO_GPU:
        return None
    if hw.strategy not in ("ddp", "fsdp", "lora") and spec.kind in FULL_ONLY:
        n = need(spec, shape, pairs, eval_prompts, replace(hw, strategy="ddp"))
        return replace(n, strategy="ddp", note=f"{n.note}; own loop: whole models on every GPU (DDP)".lstrip("; "))
    c, policy, score = spec.config, mp.params(shape), mp.params(shape, head_outputs=1)
    adapters = hw.strategy in mp.ADAPTERS
    if spec.kind in ("sft", "align"):
        return _train_need(spec, policy, pairs, adapters)
    if spec.kind == "ref-logps":      # TRL runs this pass before FSDP shards anything: a whole copy per GPU
        t = c["step"]
        return Need([(policy, False)], 2 * t["batch_size"] * t["max_length"], 2 * policy * 2 * pairs * t["max_length"],
                    backward=False, sharded=False)
    if spec.kind == "score-model":
        t = c["score"]
        tokens = 2 * pairs * t["epochs"] * t["max_length"]
        per_gpu = max(1, t["batch_size"] // hw.gpus)       # its batch is global (Safe RLHF's 16 x 8)
        micro = 2 * min(per_gpu, t.get("micro_batch") or per_gpu) * t["max_length"]
        return Need([(score, True)], micro, mp.train_flops(score, 0, tokens, adapters))
    if spec.kind == "rl":
        return _rl_need(c["ppo"], policy, score, pairs, hw)
    if spec.kind == "generate":       # vLLM on one GPU: whole bf16 weights and the batch's KV cache
        g = c["generation"]
        new, batch = g.get("max_new_tokens", 512), g.get("batch_size", 16)
        answers = (pairs if c["set"] == "train" else eval_prompts // 2) * max(1, c.get("samples", 0))
        return Need([(policy, False)], batch * (new + PROMPT_TOKENS), 2 * policy * answers * new, backward=False,
                    sharded=False, kv_cache=True, weight_reads=-(-answers // batch) * new)
    if spec.kind == "mocan-dual":     # the reward and cost models read every sampled answer once
        m = c["mocan"]
        tokens = pairs * m.get("samples", 4) * (m.get("max_new_tokens", 512) + PROMPT_TOKENS)
        return Need([(score, False), (score, False)], 16 * 512, 2 * 2 * score * tokens, backward=False, sharded=False)
    raise BenchError(f"bench plan has no estimate for stage kind '{spec.kind}'")


def _train_need(spec, policy: int, pairs: int, adapters: bool) -> Need:
    """SFT or a DPO/KTO step: the policy trained; the reference held beside it unless the step reads its
    log-probs from a ref-logps stage or is the policy with its adapters off (LoRA)."""
    t = spec.config["train"] if spec.kind == "sft" else spec.config["step"]
    tokens = 2 * pairs * t["epochs"] * t["max_length"]     # both responses (KTO: unpaired) or chosen + rejected
    shared = "ref_logps" in spec.inputs
    ref = spec.kind == "align" and not shared               # the reference's forward runs in every step
    models = [(policy, True)] + ([(policy, False)] if ref and not adapters else [])
    return Need(models, 2 * t["batch_size"] * t["max_length"], mp.train_flops(policy, policy * ref, tokens, adapters),
                note="reference log-probs from its ref-logps stage" if shared else "")


def _rl_need(p: dict, policy: int, score: int, pairs: int, hw: Hardware) -> Need:
    """PPO-Lagrangian / RePO: actor and two critics trained; reference, reward and cost models frozen (under LoRA
    each frozen model is its trained twin's base with the adapters off: three bases held, not six). Per step: the
    rollouts, a forward of the five scorers over the episodes, one update of the three trained models (+ PTX)."""
    steps = p["steps"] or p["epochs"] * -(-pairs // p["rollout_batch"])
    episodes = steps * p["rollout_batch"] * p["max_length"]             # tokens of every episode
    generated = steps * p["rollout_batch"] * p["max_new_tokens"]
    adapters = hw.strategy in mp.ADAPTERS
    models = [(policy, True), (score, True), (score, True)]
    models += [] if adapters else [(score, False), (score, False), (policy, False)]
    # rollouts; the actor's and reference's log-probs and the four score models' values; the three updates (+ PTX)
    trained = policy + 2 * score + (policy if p["ptx_coeff"] else 0)
    flops = 2 * policy * generated + mp.train_flops(trained, 2 * policy + 4 * score, episodes, adapters)
    micro = max(1, p["rollout_batch"] // hw.gpus) * p["max_length"]
    return Need(models, micro, flops, note=f"{steps} PPO steps")


def memory(n: Need, shape: mp.Shape, hw: Hardware) -> dict:
    """GiB per GPU: the models (weights, gradients, optimiser states) and the activations of one micro-batch (or
    a generation batch's KV cache)."""
    if n.strategy:
        hw = replace(hw, strategy=n.strategy)
    if not n.sharded:
        hw = replace(hw, strategy="ddp" if hw.strategy not in mp.ADAPTERS else hw.strategy)
    models = sum(mp.trained_bytes(p, hw.strategy, hw.gpus, shape, hw.lora_rank) if trained
                 else mp.frozen_bytes(p, hw.strategy, hw.gpus) for p, trained in n.models)
    if n.kv_cache:
        act = mp.kv_cache_bytes(shape, n.micro_tokens)
    elif n.backward:
        act = mp.activation_bytes(shape, n.micro_tokens, hw.checkpointing)
    else:
        act = mp.forward_bytes(shape, n.micro_tokens)
    return {"models": models / mp.GIB, "activations": act / mp.GIB, "total": (models + act) / mp.GIB}


def hours(n: Need, hw: Hardware) -> float:
    """GPU-hours: the FLOPs at the MFU, or for decoding, if longer, one read of the weights per step at the GPU's
    memory bandwidth (the roofline's memory-bound side)."""
    compute = mp.gpu_hours(n.flops, hw.gpu_tflops, hw.mfu)
    weights = sum(FROZEN_WEIGHT * p for p, _ in n.models)
    return max(compute, n.weight_reads * weights / (hw.gpu_bandwidth * 1e12) / 3600)


def fits(n: Need, shape: mp.Shape, hw: Hardware) -> str:
    """'yes', 'tight' (over TIGHT of a GPU), or 'NO: <the first strategy that fits, with its GiB>'."""
    total = memory(n, shape, hw)["total"]
    hw = replace(hw, strategy=n.strategy or hw.strategy)
    if total <= TIGHT * hw.gpu_memory:
        return "yes"
    if total <= hw.gpu_memory:
        return "tight"
    for other in ("fsdp", "zero3-offload") + (() if n.strategy else ("lora", "qlora")):
        alt = memory(replace(n, strategy=""), shape, replace(hw, strategy=other))["total"]
        if other != hw.strategy and alt <= TIGHT * hw.gpu_memory:
            # a stage that runs as DDP under this plan's strategy (its code has no such path): what would fit
            return f"NO (runs as DDP): {other} needs {alt:.1f}" if n.strategy else f"NO: {other} needs {alt:.1f}"
    return "NO: nothing here fits; more GPUs"


def size(p: int) -> str:
    return f"{p / 1e9:.1f}B" if p >= 1e8 else f"{p / 1e6:.1f}M"


def plan_rows(graph, shape: mp.Shape, pairs: int, eval_prompts: int, hw: Hardware) -> list[dict]:
    rows = []
    for spec in graph:
        n = need(spec, shape, pairs, eval_prompts, hw)
        if n is None:
            continue
        mem = memory(n, shape, hw)
        what = {True: "adapters on" if (n.strategy or hw.strategy) in mp.ADAPTERS else "trained", False: "frozen"}
        held = "; ".join(f"{what[t]} {' + '.join(size(p) for p, tt in n.models if tt == t)}"
                         for t in (True, False) if any(tt == t for _, tt in n.models))
        rows.append({"stage": spec.label, "kind": spec.kind, "held": held, "weights_gib": mem["models"],
                     "activations_gib": mem["activations"], "gib_per_gpu": mem["total"], "fits": fits(n, shape, hw),
                     "gpu_hours": hours(n, hw), "note": n.note})
    return rows


def fold_generation(rows: list[dict]) -> list[dict]:
    """Every generation stage is alike (one model, one prompt set): one row for them all, their hours summed."""
    gens = [r for r in rows if r["kind"] == "generate"]
    if len(gens) < 2:
        return rows
    first = next(i for i, r in enumerate(rows) if r["kind"] == "generate")
    folded = {**max(gens, key=lambda r: r["gib_per_gpu"]), "stage": f"generate x{len(gens)}",
              "gpu_hours": sum(r["gpu_hours"] for r in gens), "note": "each model x prompt set, vLLM"}
    rest = [r for r in rows if r["kind"] != "generate"]
    return rest[:first] + [folded] + rest[first:]


def format_plan(rows: list[dict], hw: Hardware, shape: mp.Shape) -> str:
    import pandas as pd
    rows = fold_generation(rows)
    head = (f"{hw.gpus} x {hw.gpu_memory:g} GiB, {hw.strategy}, activation checkpointing "
            f"{'on' if hw.checkpointing else 'off'}; policy {size(mp.params(shape))}; "
            f"{hw.gpu_tflops:g} TFLOP/s per GPU at {hw.mfu:.0%} MFU")
    if not rows:
        return head + "\n(no GPU stage in this plan)"
    table = pd.DataFrame(rows).rename(columns={"held": "models held", "weights_gib": "models GiB",
                                               "activations_gib": "act. GiB", "gib_per_gpu": "GiB/GPU",
                                               "gpu_hours": "GPU-h"})
    total = sum(r["gpu_hours"] for r in rows)
    one, two = "{:.1f}".format, "{:.2f}".format
    out = table.to_string(index=False, formatters={**{c: one for c in ("models GiB", "act. GiB", "GiB/GPU")}, "GPU-h": two})
    every = f"all {hw.gpus} GPUs" if hw.gpus > 1 else "the GPU"
    return (f"{head}\n{out}\ntotal {total:.0f} GPU-hours: {total / hw.gpus:.1f} h of wall time with each stage on "
            f"{every} in turn (at perfect scaling)")


def bench_plan(run, hw: Hardware) -> str:
    """The table for a planned run (nothing is built): its policy's shape, its data's size from [plan]."""
    if hw.strategy not in mp.STRATEGIES:
        raise BenchError(f"unknown strategy '{hw.strategy}': choose one of {', '.join(mp.STRATEGIES)}")
    if hw.gpus < 1 or hw.gpu_memory <= 0:
        raise BenchError("--gpus must be at least 1 and --gpu-memory above 0 (GiB)")
    plan = run.typed["plan"]
    pairs = plan.train_pairs or built_pairs(run)
    shape = shape_of(run.config["policy"].get("base", "tiny"), run.config["policy"].get("tiny", {}))
    return format_plan(plan_rows(run.graph, shape, pairs, plan.eval_prompts, hw), hw, shape)


def built_pairs(run) -> int:
    """Training pairs of the run's data stage where it is built (after --limit), else a one-line error."""
    from safealign.pipeline import data_rows
    from safealign.plan import is_done
    spec = run.data_stage
    if not is_done(spec, run.store.root):
        raise BenchError("bench plan needs the data's size: set [plan] train_pairs in the benchmark (or "
                         "--set plan.train_pairs=N), or build the data stage first")
    from safealign.stages import Stage
    return len(data_rows(Stage(spec.path(run.store.root)), "train", run.limit))
