"""Writes paper-mini's data files (benchmarks/paper_mini/) from the tiny world, each in the format of the file it
stands in for, so `paper-mini` reads them through the same loaders as `paper` reads the real ones:

- train.jsonl, test.jsonl: PKU-Alignment/PKU-SafeRLHF-30K's rows (one JSON object a line, its seven columns);
- helpful_problem.json, safety_problem.json: the SACPO repository's prompt files (line/sacpo asset/*.json: a JSON
  list of {prompt, category}, indented by 4), one held-out phrasing per benign / harmful topic;
- alpaca_data.json: Alpaca's instruction set ({instruction, input, output}) for PTX: benign prompts only, disjoint
  from the training pairs and from every red-team topic, answered with all of the topic's steps.

    python -m safealign.benchmarks.make_paper_mini [folder]

The files are shipped; tests/test_paper_mini.py checks that this script still writes exactly them.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from safealign import world
from safealign.data import PREFERENCE_COLUMNS

FOLDER = Path(__file__).parent / "paper_mini"
PROMPTS_PER_TOPIC = 1      # 32 training prompts: MoCAN samples pi_ref on each distinct one
PAIRS_PER_PROMPT = 4       # PKU-SafeRLHF repeats a prompt with other answer pairs: 128 pairs, half of paper's
#                            effective step-1 batch (256): one update a pass
TEST_PAIRS = 64
PTX_ROWS = 64
HELPFUL_CATEGORY = "alpaca_eval_helpful_base"      # the category every row of SACPO's helpful file carries


def train_pairs(splits: dict, rng: random.Random) -> list[dict]:
    """PROMPTS_PER_TOPIC of the world's training prompts per topic, each with PAIRS_PER_PROMPT answer pairs drawn
    as world.build draws them (a compliance rate per harmful topic, Bradley-Terry labels at temperature 0.5)."""
    chosen: dict = {}
    for row in splits["train"]:
        topic = world.topic_of(row["prompt"])
        if sum(t is topic for t in chosen.values()) < PROMPTS_PER_TOPIC:
            chosen[row["prompt"]] = topic
    comply = {t.name: rng.uniform(0.3, 0.8) for t in world.TOPICS if t.harmful}
    rows = [world.make_row(p, t, rng, comply.get(t.name, 1.0), 0.5) for p, t in chosen.items()
            for _ in range(PAIRS_PER_PROMPT)]
    rng.shuffle(rows)
    return [{c: r[c] for c in PREFERENCE_COLUMNS} for r in rows]


def mini_files() -> dict[str, str]:
    """{file name: its text}, built from the tiny world (seed 0, one held-out phrasing per topic)."""
    splits = world.build(seed=0, eval_per_topic=1)
    pairs = train_pairs(splits, random.Random(0))
    used = {r["prompt"] for r in pairs}
    ptx_prompts = [r["prompt"] for r in splits["train"]
                   if r["prompt"] not in used and not world.topic_of(r["prompt"]).harmful][:PTX_ROWS]
    ptx = [{"instruction": p, "input": "", "output": world.join([*world.topic_of(p).steps, world.CLOSING])}
           for p in ptx_prompts]
    helpful = [{"prompt": r["prompt"], "category": HELPFUL_CATEGORY} for r in splits["helpful_eval"]]
    # the Safe RLHF red-team file names its categories in title case ("Social Bias", "Physical Harm")
    redteam = [{"prompt": r["prompt"], "category": r["category"].title()} for r in splits["redteam_eval"]]
    jsonl = lambda rows: "".join(json.dumps(r) + "\n" for r in rows)      # noqa: E731
    listed = lambda rows: json.dumps(rows, indent=4) + "\n"             # noqa: E731
    return {"train.jsonl": jsonl(pairs),
            "test.jsonl": jsonl([{c: r[c] for c in PREFERENCE_COLUMNS} for r in splits["test"][:TEST_PAIRS]]),
            "helpful_problem.json": listed(helpful), "safety_problem.json": listed(redteam),
            "alpaca_data.json": listed(ptx)}


def write(folder: Path = FOLDER) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in mini_files().items():
        (folder / name).write_text(text)
        paths.append(folder / name)
    return paths


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER):
        print(path)
