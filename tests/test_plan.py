"""The plan: built and checked before anything runs, plain data, keys from exactly what a stage receives, and
`bench run --dry-run` showing it with estimated times and judge costs."""
import json

import pytest

from safealign import BenchError
from safealign.cli import main
from safealign.plan import shipped
from safealign.run import Run
from safealign.stages import stage_key


def plan(tmp_path, methods="sacpo,saferlhf", *overrides, **kw):
    return Run("tiny", methods, tmp_path / "out", tmp_path / "cache", overrides=list(overrides), echo=False, **kw)


def test_the_plan_is_plain_data_keyed_by_what_each_stage_receives(tmp_path):
    run = plan(tmp_path)
    specs = list(run.graph)
    for spec in specs:
        json.dumps(shipped(spec))                    # ships anywhere: no closures, no objects
        assert spec.key == stage_key(spec.kind, spec.config, spec.inputs)
        assert all(k in run.graph.specs for k in spec.inputs.values())     # inputs planned, and before it
        assert list(run.graph.specs).index(spec.key) > max((list(run.graph.specs).index(k)
                                                            for k in spec.inputs.values()), default=-1)
    kinds = [s.kind for s in specs]
    # one world, base, SFT; DPO(H) + 4 step-2 points; reward, cost, PPO; 2 greedy answer sets and 1 sampled set
    # per model (sft, sacpo at 4 points, saferlhf); every pair of models judged (tiny sets all_pairs)
    assert kinds.count("align") == 5 and kinds.count("score-model") == 2 and kinds.count("rl") == 1
    assert kinds.count("generate") == 6 * 3 and kinds.count("judge") == 6 * 5 // 2
    step2 = [s for s in specs if s.label.startswith("sacpo@")]
    dpo_h = next(s for s in specs if s.label == "dpo-h")
    assert len(step2) == 4 and all(s.inputs["policy"] == s.inputs["reference"] == dpo_h.key for s in step2)
    shared, = [s for s in specs if s.kind == "ref-logps"]      # the sweep's one reference pass, on DPO(H)
    assert shared.inputs["reference"] == dpo_h.key and all(s.inputs["ref_logps"] == shared.key for s in step2)
    assert not any(p.exists() for p in (tmp_path / "cache").glob("*/*"))      # planning ran nothing


def test_keys_follow_the_config_and_not_the_runtime(tmp_path):
    a, b = plan(tmp_path, "dpo-h"), plan(tmp_path, "dpo-h", "generation.max_new_tokens=12")
    gen = lambda run: {s.label: s.key for s in run.graph if s.kind == "generate"}    # noqa: E731
    assert gen(a).keys() == gen(b).keys() and not set(gen(a).values()) & set(gen(b).values())
    train = lambda run: [s.key for s in run.graph if s.kind in ("sft", "align")]    # noqa: E731
    assert train(a) == train(b)                     # generation settings never retrain a model
    limited = plan(tmp_path, "dpo-h", limit=16)
    assert not set(gen(limited).values()) & set(gen(a).values())     # --limit changes the prompts a stage gets


def test_typos_anywhere_fail_while_planning(tmp_path):
    with pytest.raises(BenchError, match="methods.naive-merge.weights"):
        plan(tmp_path, "dpo-h", "methods.naive-merge.weights=0.5")        # a section this run does not use
    with pytest.raises(BenchError, match="resources.align"):
        plan(tmp_path, "dpo-h", "resources.align.gpu=1")
    with pytest.raises(BenchError, match="unknown executor"):
        plan(tmp_path, "dpo-h", executor="slurm").execute()


def test_dry_run_prints_the_plan_with_estimates_and_judge_costs(tmp_path, capsys):
    cache = tmp_path / "cache"
    earlier = cache / "align" / "0123456789abcdef"           # an earlier run's DPO stage took 42 s
    earlier.mkdir(parents=True)
    (earlier / "stage.json").write_text(json.dumps({"stage": "align", "label": "dpo-h", "seconds": 42.0}))
    assert main(["run", "--dry-run", "--benchmark", "tiny", "--methods", "sacpo,saferlhf", "--cache", str(cache),
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    dpo_line = next(ln for ln in out.splitlines() if ln.startswith("align") and " dpo-h " in ln)
    assert " run " in dpo_line and "42s" in dpo_line
    assert "world" in out and "cached" in out         # the offline world is built so the prompts can be counted
    assert "judging: 15 stages to run, 2880 comparisons" in out and "est. cost $0.00" in out   # 15 x 96 x 2 orders
    assert not list(cache.glob("align/*/model")) and not (cache / "sft").exists()
