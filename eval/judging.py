"""Pairwise judging of one model against a baseline, in both orders x repetitions (the paper's protocol),
written to JSONL one judgment per line so a killed run judges only what is missing."""
from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from safealign import BenchError
from safealign.stages import read_jsonl, write_jsonl
from safealign.eval.judges import Comparison, Judge

ORDERS = ("model_first", "baseline_first")


def judgment_id(row: dict) -> str:
    return f"{row['kind']}|{row['prompt_id']}|{row['order']}|{row['repetition']}"


def plan(model: str, baseline: str, gens: dict[str, dict[str, list[dict]]], kind_sets: dict[str, str],
         repetitions: int) -> list[dict]:
    """Every judgment to make. gens[model][prompt_set] is that model's list of generation rows; kind_sets maps
    a judging kind to its prompt set (helpfulness -> helpful prompts, harmlessness -> red-team prompts)."""
    rows = []
    for kind, prompt_set in kind_sets.items():
        base = {g["prompt_id"]: g for g in gens[baseline][prompt_set]}
        for gen in gens[model][prompt_set]:
            for order in ORDERS:
                for rep in range(repetitions):
                    rows.append({"kind": kind, "prompt_id": gen["prompt_id"], "prompt": gen["prompt"], "order": order,
                                 "repetition": rep, "model": model, "baseline": baseline,
                                 "response_model": gen["response"],
                                 "response_baseline": base[gen["prompt_id"]]["response"]})
    return rows


def run_judgments(judge, todo_all: list[dict], out: Path, batch_size: int = 32, desc: str = "judge") -> list[dict]:
    """Judge what `out` lacks of `todo_all`, appending and flushing a line as each verdict comes (judge.stream:
    in the order they are decided), so a killed run judges only what is missing; rows back in todo_all's order.
    batch_size is the chunk a judge without a stream of its own is called with."""
    done = {judgment_id(r): r for r in read_jsonl(out)}
    write_jsonl(out, done.values())
    todo = [r for r in todo_all if judgment_id(r) not in done]
    comps = [_comparison(r) for r in todo]
    # A judge that waits on a server streams: chunks of 32 each waited for their slowest request, which left
    # the other threads idle (Judge.stream; the plain function serves an object with only judge()).
    verdicts = judge.stream(comps, batch_size) if hasattr(judge, "stream") else Judge.stream(judge, comps, batch_size)
    retry = 0
    with open(out, "a") as f, tqdm(total=len(todo), desc=desc, unit="pair", disable=not todo) as bar:
        for i, v in verdicts:
            bar.update(1)
            if v.retryable:              # not written: the stage stays unfinished and a rerun asks again
                retry += 1
                continue
            f.write(json.dumps(_row(todo[i], v)) + "\n")
            f.flush()
    if retry:
        raise BenchError(f"{retry} judge calls failed after all retries (rate limits, server errors or timeouts); "
                         "the other judgments are kept: run the same command again to ask only for these")
    by_id = {judgment_id(r): r for r in read_jsonl(out)}
    return [by_id[judgment_id(r)] for r in todo_all]


def _row(r: dict, v) -> dict:
    """The judgment line of plan row `r`: the verdict's scores put back as model / baseline."""
    first_is_model = r["order"] == "model_first"
    rec = {k: r[k] for k in ("kind", "prompt_id", "order", "repetition", "model", "baseline")}
    rec["seed"] = r.get("seed", 0)
    rec.update(score_model=v.score_a if first_is_model else v.score_b,
               score_baseline=v.score_b if first_is_model else v.score_a, ok=v.ok, raw=v.raw)
    return rec


def _comparison(r: dict) -> Comparison:
    a, b = r["response_model"], r["response_baseline"]
    if r["order"] == "baseline_first":
        a, b = b, a
    return Comparison(r["prompt_id"], r["kind"], r["prompt"], a, b, r["repetition"], r.get("seed", 0))
