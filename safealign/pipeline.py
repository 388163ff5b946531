"""The stage functions every benchmark shares: data, the base policy, generation and judging. Each is called as
fn(job) (safealign/plan.py Job) and reads only job.config, job.inputs and job.runtime, so it runs the same in the
run's process or in a Ray worker; the method modules hold the rest (sft, align, merge, score models, RL, MoCAN)."""
from __future__ import annotations

import json
from pathlib import Path

from safealign import BenchError
from safealign.stages import Stage, read_jsonl, write_atomic, write_jsonl

PROMPT_SETS = {"helpful": "helpfulness", "redteam": "harmlessness"}   # prompt set -> the judging kind it serves
PROMPT_SETS_BY_KIND = {kind: s for s, kind in PROMPT_SETS.items()}
FILES = ("train", "test", "helpful_eval", "redteam_eval")


def data_rows(data: Stage, name: str, limit: int | None) -> list[dict]:
    """A split of the data stage, `limit` rows spread over its categories (safealign/data.py spread)."""
    from safealign.data import spread
    return spread(read_jsonl(data / f"{name}.jsonl"), limit)


def train_rows(job) -> list[dict]:
    return data_rows(job.inputs["data"], "train", job.config.get("limit"))


def prompt_rows(data: Stage, prompt_set: str, limit: int | None, samples: int = 0) -> list[dict]:
    """The prompts of a set: an evaluation set's rows, or for "train" each distinct training prompt (MoCAN samples
    pi_ref there); with `samples` > 0 each prompt `samples` times, ids '<prompt_id>#<i>'."""
    if prompt_set == "train":
        texts = dict.fromkeys(r["prompt"] for r in data_rows(data, "train", limit))
        prompts = [{"prompt_id": f"t{i:05d}", "prompt": p, "category": ""} for i, p in enumerate(texts)]
    else:
        prompts = data_rows(data, f"{prompt_set}_eval", limit)
    if samples:
        prompts = [{**p, "prompt_id": f"{p['prompt_id']}#{i}", "sample": i} for p in prompts for i in range(samples)]
    return prompts


# -- data --------------------------------------------------------------------------------------------------
def write_world(job) -> None:
    from safealign import world
    _write_splits(job.work, world.build(**job.config["world"]))


def write_exact(job) -> None:
    from safealign import exact
    _write_splits(job.work, exact.build(**job.config["exact"]))


def write_external(job) -> None:
    """The preference data and both prompt sets from their sources: local files, hub ids at a revision, or URLs
    with a pinned sha256 (safealign/sources.py, downloaded once into the cache's downloads/)."""
    from safealign.data import load_preferences, load_prompts
    from safealign.sources import resolve
    data_cfg, eval_cfg = job.config["data"], job.config["eval"]
    local = lambda src, sha: resolve(src, sha, job.root / "downloads", job.log)  # noqa: E731
    rev, src = data_cfg.get("revision") or None, local(data_cfg["source"], data_cfg.get("sha256"))
    test_src = local(data_cfg["test_source"], data_cfg.get("test_sha256")) if data_cfg.get("test_source") else src
    splits = {"train": load_preferences(src, data_cfg.get("train_split", "train"), rev),
              "test": load_preferences(test_src, data_cfg.get("test_split", "test"), rev)}
    for s in PROMPT_SETS:
        spec = eval_cfg.get(s)
        if not spec:
            raise BenchError(f"benchmark has no eval_prompts.{s}: set it to a prompt file, hub id or URL")
        splits[f"{s}_eval"] = load_prompts(local(spec["source"], spec.get("sha256")), spec.get("split", "test"),
                                           spec.get("revision"), prefix=s, where=spec.get("where"))
    _write_splits(job.work, splits)


def _write_splits(work: Path, splits: dict) -> None:
    for name in FILES:
        write_jsonl(work / f"{name}.jsonl", splits[name])


# -- the base policy ------------------------------------------------------------------------------------------
def build_tiny_base(job) -> None:
    """A tiny Llama with a tokenizer trained on the data's texts and the template (`tokenizer` absent = "bpe")."""
    from safealign import models
    tiny = {"tokenizer": "bpe", **job.config["tiny"]}
    template = job.config["template"]
    texts = [r[k] for r in train_rows(job) for k in ("prompt", "response_0", "response_1")] + [template]
    tok = models.build_tokenizer(texts, tiny["vocab_size"], job.work / "model", tiny["tokenizer"])
    models.build_tiny_llama(tok, tiny, job.config["seed"], job.work / "model")


def export_wheel(job) -> None:
    from safealign import models
    models.export_smollm2_wheel(job.work / "model")


def pointer(job) -> None:
    """A hub id or a local checkpoint: nothing to build; the stage's config names it (Stage.model reads it)."""


# -- generation and judging -----------------------------------------------------------------------------------
def generate_stage(job) -> None:
    from safealign.eval.generate import GenerationConfig, generate
    from safealign.methods.training import from_dict
    c = job.config
    prompts = prompt_rows(job.inputs["data"], c["set"], c["limit"], c["samples"])
    generate(job.inputs["model"].model, prompts, c["template"], from_dict(GenerationConfig, c["generation"], "generation"),
             job.work / "generations.jsonl", desc=job.runtime.get("desc", "generate"))


_JUDGES: dict = {}


def judge_for(spec: dict, root: Path, log):
    """The judge a judging stage asks: built once per process from the run's judge settings (runtime, unhashed:
    they may hold a concurrency or a price; what changes verdicts is in the stage config's judge record)."""
    from safealign.eval.judges import make_judge
    from safealign.stages import digest
    key = digest(spec)
    if key not in _JUDGES:
        _JUDGES[key] = make_judge(spec["name"], spec["settings"] or None, root / "judge-calls", log,
                                  template=spec["template"], world=spec["world"])
    return _JUDGES[key]


def judge_stage(job) -> None:
    """Pairwise judgments of config.model against config.baseline on both prompt sets, both orders, every round
    (the paper's protocol); usage.json holds what this stage asked the judge (summed by the run's report)."""
    from safealign.eval.judging import plan, run_judgments
    c = job.config
    judge = judge_for(job.runtime["judge"], job.root, job.log)
    gens = {c[who]: {s: read_jsonl(job.inputs[f"{who}/{s}"] / "generations.jsonl") for s in PROMPT_SETS}
            for who in ("model", "baseline")}
    todo = [{**r, "seed": c["seed"]} for r in plan(c["model"], c["baseline"], gens, PROMPT_SETS_BY_KIND,
                                                    c["judge"]["repetitions"])]
    before = judge.usage.as_dict() if judge.usage is not None else {}
    try:
        run_judgments(judge, todo, job.work / "judgments.jsonl", desc=job.runtime.get("desc", "judge"))
    finally:
        if judge.usage is not None:
            after = judge.usage.as_dict()
            spent = {k: after[k] - before.get(k, 0) for k in after if isinstance(after[k], (int, float))}
            write_atomic(job.work / "usage.json", json.dumps(spent))
