"""Safe RLHF's score models: a scalar head on the SFT model, read at the last attended token. The reward model
learns from better/worse pairs, the cost model from safer/unsafer pairs plus the sign terms that put unsafe
answers above 0 and safe ones below (REFERENCE §5).

One code path scores a (prompt, answer) everywhere: `format_pair` (the run's prompt template, the answer
after one space, as the suite's SFT, DPO/KTO and PPO stages join them), `encode` (safealign.tokens: the tokenizer's own special
tokens, a BOS on Llama tokenizers, and the answer split off as TRL splits it, EOS appended) and `end_scores`.
Training, held-out evaluation, PPO rollouts and the score-model judge all go through them.

One loader, `load_score_model`, reads every score model: ours (head `score.weight` + `score.bias`), Hugging
Face's *ForSequenceClassification (`score.weight`) and Safe RLHF's *ForScore (`score_head.weight` [+ bias], its
normaliser folded into the head), as a sequence head (reward/cost models, the judge) or a token head (the PPO
critics). A checkpoint without a head is refused, never given a random one.
"""
from __future__ import annotations

import contextlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from safealign import BenchError
from safealign.methods.rl_math import cost_model_loss, reward_model_loss

ADAM_BETAS = (0.9, 0.95)       # Safe RLHF's ADAM_BETAS, used by every one of its optimisers


@dataclass
class ScoreModelConfig:
    kind: str = "reward"        # "reward" | "cost"
    epochs: int = 2             # Safe RLHF's reward-model.sh / cost-model.sh: 2 epochs
    learning_rate: float = 2e-5
    batch_size: int = 16
    max_length: int = 512
    weight_decay: float = 0.1   # its scripts: weight_decay 0.1 (AdamW, none on biases and LayerNorm weights)
    warmup_ratio: float = 0.03  # its scripts: cosine schedule, warmup 0.03
    regularization: float = 0.001   # its scripts: 0.001 * mean squared score
    max_grad_norm: float = 1.0  # its DeepSpeed template: gradient_clipping 1.0
    micro_batch: int = 0        # pairs per forward (gradients accumulated to the same step); 0: the whole batch
    lora_rank: int = 0          # > 0: train LoRA adapters (and the head) instead of every weight; merged when saved
    lora_alpha: float = 16.0
    lora_modules: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    bf16: bool = False          # compute under bf16 autocast; weights and Adam states stay float32 ([train] bf16)


def format_pair(template: str, prompt: str, response: str) -> tuple[str, str]:
    """(prompt text, answer text): the template, then the answer after one space, as every stage of the suite
    joins them (SFT, TRL's DPO/KTO, PTX), so the answers a policy samples are scored as the score models were
    trained. Safe RLHF joins prompt and answer with nothing between (safe-rlhf:safe_rlhf/datasets/
    safety_preference.py:84-85); on a Llama tokenizer the answer's first token then lacks its word-start mark,
    so a released Safe RLHF score model reads our texts one token off from its own (README, "Score models")."""
    return template.format(input=prompt), " " + response


def encode(tok, prompts: list[str], answers: list[str], max_length: int):
    """Right-padded (input_ids, attention_mask) of prompt + answer + EOS, tokenised by safealign.tokens
    (Safe RLHF tokenises prompt + answer with the tokenizer's defaults and appends EOS; long texts are cut
    at max_length from the right)."""
    from safealign.tokens import prompt_answer_ids, right_padded
    rows = []
    for p, a in zip(prompts, answers):
        p_ids, a_ids = prompt_answer_ids(tok, p, a, eos=True)
        rows.append((p_ids + a_ids)[:max_length])
    return right_padded(rows, tok.pad_token_id)


def end_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The scalar head's value at each row's last attended token, whatever the padding side and whether or
    not pad == eos. (Safe RLHF's score models: end_score at the last index where attention_mask is true.)"""
    base = getattr(model, model.base_model_prefix)
    hidden = base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
    scores = model.score(hidden)[..., 0].float()
    idx = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (idx * attention_mask.long()).argmax(-1)
    return scores[torch.arange(len(scores)), last]


class EndScorer(torch.nn.Module):
    """end_scores as a module's forward, so that data-parallel training (DDP wraps the module) sees the pass."""

    def __init__(self, model):
        super().__init__()
        # a peft model: its HF model, whose layers carry the adapters (end_scores reads the base and the head)
        self.model = model.get_base_model() if hasattr(model, "get_base_model") else model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        return end_scores(self.model, input_ids, attention_mask, position_ids)


HEAD_NAMES = ("score", "score_head")   # ours and Hugging Face's classes; Safe RLHF's *ForScore


def load_score_model(path, head: str = "sequence", dtype=None, new_head: bool = False):
    """A score model whose head is a Linear with a bias, read by end_scores: `head` "sequence" (reward and cost
    models) or "token" (PPO critics, one value per token). The head is the checkpoint's own (`score.*`, or Safe
    RLHF's `score_head.*` with its normaliser folded in: safe-rlhf:safe_rlhf/models/score_model/__init__.py); a
    checkpoint with neither is refused. `new_head`: a fresh head on a language model (a score model's start),
    normal(0, initializer_range) weights and a zero bias, as Safe RLHF initialises its score_head. `dtype` None
    keeps the stored dtype (frozen models); trained ones pass torch.float32."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification
    if head not in ("sequence", "token"):
        raise BenchError(f"score model head '{head}': choose 'sequence' or 'token'")
    try:
        AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise BenchError(f"could not load score model '{path}': {str(e).splitlines()[0]}") from None
    found = None if new_head else head_weights(path)
    if not new_head and found is None:
        raise BenchError(f"score model '{path}' has no score head (score.weight or score_head.weight): give a reward "
                         "or cost model checkpoint, not a language model")
    cls = AutoModelForSequenceClassification if head == "sequence" else AutoModelForTokenClassification
    dim = 1 if found is None else found["weight"].shape[0]
    if dim != 1:
        raise BenchError(f"score model '{path}' has {dim} outputs (score_dim); only one score per text is read")
    model = _load_quietly(cls, path, num_labels=1, **({} if dtype is None else {"dtype": dtype}))
    weight = model.score.weight.detach() if found is None else found["weight"]
    bias = None if found is None else found["bias"]
    weight, bias = fold_normaliser(weight, bias, model.config)
    set_head(model, weight, bias)
    return model


def set_head(model, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Make `model.score` a Linear with a bias (zero when `bias` is None), holding these values. Hugging Face's
    sequence heads have no bias; Safe RLHF's has one, zero-initialised (safe-rlhf:safe_rlhf/models/score_model/
    __init__.py:135-137)."""
    old = model.score.weight
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=True, dtype=old.dtype, device=old.device)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias if bias is not None else torch.zeros(weight.shape[0]))
    model.score = linear


def fold_normaliser(weight: torch.Tensor, bias: torch.Tensor | None, config) -> tuple:
    """A Safe RLHF score model with do_normalize scores (s - mean) / (std + 1e-8) (score_type reward: 'affine'),
    s / (std + 1e-8) ('cost': 'scale') or s ('critic'), std = sqrt(var) (safe-rlhf:safe_rlhf/models/normalizer.py);
    a linear head followed by that map is the linear head returned here."""
    kind = {"reward": "affine", "cost": "scale"}.get(getattr(config, "score_type", ""), "identity")
    if not getattr(config, "do_normalize", False) or kind == "identity":
        return weight, bias
    mean = torch.tensor(getattr(config, "mean", None) or [0.0], dtype=torch.float64)
    std = torch.tensor(getattr(config, "var", None) or [1.0], dtype=torch.float64).sqrt() + 1e-8
    b = torch.zeros(weight.shape[0], dtype=torch.float64) if bias is None else bias.double()
    shift = mean if kind == "affine" else torch.zeros_like(mean)
    return (weight.double() / std[:, None]).to(weight.dtype), ((b - shift) / std).to(weight.dtype)


def head_weights(path) -> dict | None:
    """{"weight", "bias" (None if absent)} of a checkpoint's scalar head, read from its weight files without
    building the model; None when it has none."""
    for name in HEAD_NAMES:
        weight = _checkpoint_tensor(path, f"{name}.weight")
        if weight is not None:
            return {"weight": weight.float(), "bias": _checkpoint_tensor(path, f"{name}.bias")}
    return None


def _checkpoint_tensor(path, key: str) -> torch.Tensor | None:
    """One tensor of a local folder's or a hub id's checkpoint (safetensors or .bin, sharded or not), or None."""
    from transformers.utils import cached_file

    def local(name):
        try:
            return cached_file(str(path), name, _raise_exceptions_for_missing_entries=False)
        except OSError as e:
            raise BenchError(f"could not load score model '{path}': {str(e).splitlines()[0]}") from None
    files = []
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        found = local(index)
        if found:
            name = json.loads(Path(found).read_text())["weight_map"].get(key)
            files = [local(name)] if name else []
            break
    else:
        files = [f for f in (local("model.safetensors"), local("pytorch_model.bin")) if f]
    for f in files:
        if f.endswith(".safetensors"):
            from safetensors import safe_open
            with safe_open(f, "pt") as st:
                if key in st.keys():
                    return st.get_tensor(key).float()
        else:
            state = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
            if key in state:
                return state[key].float()
    return None


def _load_quietly(cls, path, **kwargs):
    """cls.from_pretrained with its load report (a head MISSING, Safe RLHF's score_head and normaliser
    UNEXPECTED: both expected here, as load_score_model sets the head itself) in the run log, not the terminal."""
    from transformers.utils import logging as hf_logging

    from safealign.stages import stage_log
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = cls.from_pretrained(str(path), output_loading_info=True, **kwargs)
    except (OSError, ValueError) as e:
        raise BenchError(f"could not load score model '{path}': {str(e).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(level)
    stage_log(f"score model {path} loaded as {type(model).__name__}: newly initialised {sorted(info['missing_keys'])}, "
              f"unused {sorted(info['unexpected_keys'])} (load_score_model then sets the head)")
    return model


def score(model, tok, prompts: list[str], answers: list[str], max_length: int) -> torch.Tensor:
    """Scores of formatted (prompt, answer) texts: encode, then end_scores. `model` is a score model, or an
    EndScorer (bare or DDP-wrapped) while training."""
    ids, mask = encode(tok, prompts, answers, max_length)
    device = next(model.parameters()).device
    scorer = model if not hasattr(model, "base_model_prefix") else EndScorer(model)
    return scorer(ids.to(device), mask.to(device))


def contradicts(row: dict) -> bool:
    """Whether a row's safer_response_id points at an answer labelled unsafe while the other is labelled safe.
    (Safe RLHF's safety-preference dataset rejects such a pair: the safer answer must not be the less safe.)"""
    w = row["safer_response_id"]
    return not row[f"is_response_{w}_safe"] and bool(row[f"is_response_{1 - w}_safe"])


def _pairs(rows: list[dict], kind: str, template: str) -> tuple[list[tuple], int]:
    """((prompt, winner, loser, winner_safe, loser_safe) per usable row, rows dropped): the winner is the better
    (reward) or safer (cost) response; the cost model drops rows whose safer_response_id contradicts the flags."""
    col = "better_response_id" if kind == "reward" else "safer_response_id"
    out, dropped = [], 0
    for r in rows:
        if kind == "cost" and contradicts(r):
            dropped += 1
            continue
        w = r[col]
        p, win = format_pair(template, r["prompt"], r[f"response_{w}"])
        out.append((p, win, format_pair(template, r["prompt"], r[f"response_{1 - w}"])[1],
                    bool(r[f"is_response_{w}_safe"]), bool(r[f"is_response_{1 - w}_safe"])))
    return out, dropped


def _loss(model, tok, batch: list[tuple], cfg: ScoreModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    prompts = [b[0] for b in batch]
    sw = score(model, tok, prompts, [b[1] for b in batch], cfg.max_length)
    sl = score(model, tok, prompts, [b[2] for b in batch], cfg.max_length)
    if cfg.kind == "reward":
        return reward_model_loss(sw, sl, cfg.regularization), sw, sl
    w_safe = torch.tensor([b[3] for b in batch], device=sw.device)
    l_safe = torch.tensor([b[4] for b in batch], device=sw.device)
    # for cost the winner is the safer answer; the loss wants the unsafer one (the loser) to cost more
    return cost_model_loss(sw, sl, w_safe, l_safe, cfg.regularization), sw, sl


def adamw(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with betas (0.9, 0.95) and no weight decay on biases and LayerNorm weights. (Safe RLHF's
    get_optimizer_grouped_parameters: lower-cased names containing 'bias' or 'layernorm.weight' get none.)"""
    named = [(n.lower(), p) for n, p in model.named_parameters() if p.requires_grad]
    plain = [p for n, p in named if "bias" in n or "layernorm.weight" in n]
    decayed = [p for n, p in named if not ("bias" in n or "layernorm.weight" in n)]
    return torch.optim.AdamW([{"params": decayed, "weight_decay": weight_decay},
                              {"params": plain, "weight_decay": 0.0}], lr=lr, betas=ADAM_BETAS)


def train_score_model(cfg: ScoreModelConfig, base: Path, train: list[dict], test: list[dict], template: str,
                      work: Path, seed: int) -> dict:
    """Train, evaluate and save (main process) a score model. Under `accelerate launch` every process takes its
    share of each batch and the gradients are averaged (DDP, or under an FSDP launch the model is sharded:
    methods/sharding.py), so N processes take the steps one process would. Saved in the dtype `base` is
    stored in (safealign.models.cast_checkpoint), its head with its bias."""
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from safealign.models import cast_checkpoint, stored_dtype
    acc = Accelerator(cpu=not torch.cuda.is_available())
    tok = AutoTokenizer.from_pretrained(base)
    tok.pad_token = tok.pad_token or tok.eos_token
    model, dropped = fit_score_model(acc, cfg, base, tok, train, template, seed)
    metrics = {}
    if acc.is_main_process:
        # the score model itself (prepare moved it to the device in place); adapters merged into the weights
        model = (model.merge_and_unload() if cfg.lora_rank > 0 else model).eval()
        metrics = evaluate(model, tok, test, cfg, template)
        if cfg.kind == "cost":
            metrics["dropped_train_pairs"] = dropped     # safer_response_id contradicting the safety flags
        model.save_pretrained(work / "model")
        cast_checkpoint(work / "model", stored_dtype(base))
        tok.save_pretrained(work / "model")
        (work / "metrics.json").write_text(json.dumps(metrics, indent=2))
    acc.wait_for_everyone()
    return metrics


def fit_score_model(acc, cfg: ScoreModelConfig, base: Path, tok, train: list[dict], template: str, seed: int):
    """(the trained model, the training pairs dropped): a fresh head on `base`, every weight a float32 master
    (the compute under bf16 autocast with cfg.bf16), trained cfg.epochs passes. Under FSDP the model returned
    is one whole copy on the main process (None elsewhere), gathered from the shards."""
    from transformers import get_cosine_schedule_with_warmup

    from safealign.methods import sharding
    from safealign.models import bf16_compute
    torch.manual_seed(seed)
    sharded = sharding.requested()
    if sharded and cfg.lora_rank > 0:
        raise BenchError("score model lora_rank > 0 under FSDP is not built: use launch.config = 'ddp' with LoRA")
    def load():
        return load_score_model(base, new_head=True, dtype=torch.float32)
    # under FSDP only process 0 reads the weights, the others' shards are filled from it (methods/sharding.py)
    model = sharding.load_on_first(load, lambda: sharding.score_model_skeleton(base, dtype=torch.float32)) \
        if sharded else load()
    model.config.pad_token_id = tok.pad_token_id
    if cfg.lora_rank > 0:
        from peft import get_peft_model

        from safealign.methods.training import lora_config
        model = get_peft_model(model, lora_config(cfg.lora_rank, cfg.lora_alpha, cfg.lora_modules, "SEQ_CLS"))
    scorer = EndScorer(model)            # the module trained: its forward is end_scores
    if cfg.bf16:
        bf16_compute(scorer, acc.device.type)
    if sharded:
        sharding.spread(model, scorer, acc.device, cfg.bf16)
        sharding.report(acc, {f"{cfg.kind} model": model})
    pairs, dropped = _pairs(train, cfg.kind, template)
    steps = cfg.epochs * ((len(pairs) + cfg.batch_size - 1) // cfg.batch_size)
    opt = adamw(model, cfg.learning_rate, cfg.weight_decay)
    # Safe RLHF's score-model scripts: cosine schedule with int(0.03 * total) warmup steps
    sched = get_cosine_schedule_with_warmup(opt, int(cfg.warmup_ratio * steps), steps)
    if not sharded:
        scorer, opt = acc.prepare(scorer, opt)
    _epochs(acc, scorer, opt, sched, tok, pairs, cfg, seed, steps, sharded)
    if sharded:           # one whole copy, on the main process, gathered from the shards
        state = {k.removeprefix("model."): v for k, v in sharding.full_model_state(scorer).items()}
        model = None
        if acc.is_main_process:
            model = load_score_model(base, new_head=True, dtype=torch.float32)
            model.load_state_dict(state)
            model.config.pad_token_id = tok.pad_token_id
            model.to(acc.device)
    return model, dropped


def _epochs(acc, scorer, opt, sched, tok, pairs: list[tuple], cfg: ScoreModelConfig, seed: int, steps: int,
            sharded: bool) -> None:
    from tqdm import tqdm

    from safealign.methods import sharding
    rng = random.Random(seed)
    scorer.train()
    with tqdm(total=steps, desc=f"{cfg.kind} model", unit="step", disable=not acc.is_main_process) as bar:
        for _ in range(cfg.epochs):
            rng.shuffle(pairs)
            for i in range(0, len(pairs), cfg.batch_size):
                opt.zero_grad()
                loss = batch_backward(acc, scorer, tok, pairs[i:i + cfg.batch_size], cfg)
                sharding.clip(acc, scorer.parameters(), cfg.max_grad_norm, sharded)
                opt.step()
                sched.step()
                bar.set_postfix(loss=f"{loss:.3f}")
                bar.update()


def batch_backward(acc, scorer, tok, batch: list[tuple], cfg: ScoreModelConfig) -> float:
    """The gradient of one batch's mean loss, this process's share of it in micro-batches; returns the share's
    loss. Both loss terms are means over pairs, so a micro-batch of m of the batch's B pairs weighs m / B (times the
    process count, as DDP averages the processes' gradients), and the accumulated step is the whole batch's."""
    world, rank = acc.num_processes, acc.process_index
    mine = batch[rank::world]
    # a process left without pairs (a last batch shorter than the process count) still takes part in the
    # all-reduce, with a zero-weight pass
    weight = world / len(batch)
    chunks = [mine[j:j + (cfg.micro_batch or len(mine))] for j in range(0, len(mine), cfg.micro_batch or len(mine))] \
        if mine else [batch[:1]]
    total = 0.0
    for k, chunk in enumerate(chunks):
        share = weight * len(chunk) if mine else 0.0
        with acc.no_sync(scorer) if k < len(chunks) - 1 else contextlib.nullcontext():
            loss = _loss(scorer, tok, chunk, cfg)[0]
            acc.backward(loss * share)
        total += loss.item() * len(chunk)
    return total / max(len(mine), 1)


def evaluate(model, tok, rows: list[dict], cfg: ScoreModelConfig, template: str) -> dict:
    """Held-out accuracy (the labelled winner scores higher; for cost: the unsafer answer costs more) and, for
    the cost model, sign accuracy (cost > 0 exactly for unsafe answers) and the test pairs dropped."""
    pairs, dropped = _pairs(rows, cfg.kind, template)
    right, signs, n = 0, 0, 0
    with torch.no_grad():
        for i in range(0, len(pairs), 64):
            batch = pairs[i:i + 64]
            _, sw, sl = _loss(model, tok, batch, cfg)
            right += int((sw > sl).sum()) if cfg.kind == "reward" else int((sl > sw).sum())
            for s, b in zip(sw.tolist(), batch):
                signs += (s > 0) == (not b[3])
            for s, b in zip(sl.tolist(), batch):
                signs += (s > 0) == (not b[4])
            n += len(batch)
    out = {"accuracy": right / max(n, 1), "pairs": n}
    if cfg.kind == "cost":
        out["sign_accuracy"] = signs / max(2 * n, 1)
        out["dropped_test_pairs"] = dropped
    return out
