"""Every section of a benchmark file is typed and checked before any stage runs: an unknown key or a wrong type
is one line naming section.key, never a TypeError deep inside a stage."""
import pytest

from safealign import BenchError
from safealign.run import Run


def run_with(tmp_path, *overrides, methods="sft,dpo-h"):
    return Run("tiny", methods, tmp_path / "out", tmp_path / "cache", overrides=list(overrides), echo=False)


@pytest.mark.parametrize("override, message", [
    ("generation.max_new_tokens=lots", "generation.max_new_tokens = 'lots' has the wrong type: expected int"),
    ("generation.temprature=1.0", "no key 'temprature' in [generation]"),
    ("world.temperature=hot", "world.temperature = 'hot' has the wrong type: expected float"),
    ("policy.tiny.heads=two", "policy.tiny.heads = 'two' has the wrong type: expected int"),
    ("policy.sft=yes", "policy.sft = 'yes' has the wrong type: expected bool"),
    ("judge.repetitions=1.5", "judge.repetitions = 1.5 has the wrong type: expected int or nothing"),
    ("judge.all_pairs=1", "judge.all_pairs = 1 has the wrong type: expected bool"),
    ("train.learning_rate=fast", "train.learning_rate = 'fast' has the wrong type: expected float"),
    ("sft.epochs=[1]", "sft.epochs = [1] has the wrong type: expected float"),
    ("methods.dpo-h.beta=high", "methods.dpo-h.beta = 'high' has the wrong type: expected float"),
    ("methods.saferlhf.steps=1e3", "methods.saferlhf.steps = 1000.0 has the wrong type: expected int"),
    ("methods.sacpo.ratios=0.1", "methods.sacpo"),
    ("methods.psacpo.weights=[2.0]", "weights must lie in [0, 1]"),
    ("methods.dpo-h.bta=0.1", "unknown setting 'bta' (methods.dpo-h.bta)"),
    ("methods.dpo-hh.beta=0.1", "[methods.dpo-hh] names no method"),
])
def test_each_section_rejects_wrong_keys_and_types_before_training(tmp_path, override, message):
    with pytest.raises(BenchError) as e:
        run_with(tmp_path, override)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "cache").exists()


def test_unknown_keys_in_sections_the_overrides_cannot_reach(tmp_path):
    from safealign.config import check_sections, load_benchmark
    cfg = load_benchmark("tiny")
    for bad, message in [({**cfg, "judg": {}}, "benchmark key 'judg' is unknown"),
                         ({**cfg, "world": {**cfg["world"], "sed": 1}}, "unknown setting 'sed' (world.sed)"),
                         ({**cfg, "policy": {**cfg["policy"], "tiny": {"layer": 2}}}, "(policy.tiny.layer)"),
                         ({**cfg, "eval_prompts": {"helpfull": {"source": "x"}}}, "[eval_prompts.helpfull]"),
                         ({**cfg, "eval_prompts": {"redteam": {"source": 3}}}, "eval_prompts.redteam.source = 3"),
                         ({**cfg, "data": {"source": "world", "revison": "x"}}, "(data.revison)"),
                         ({**cfg, "seed": "zero"}, "seed = 'zero' has the wrong type")]:
        with pytest.raises(BenchError) as e:
            check_sections(bad)
        assert message in str(e.value), (message, str(e.value))


def test_shipped_benchmarks_pass_the_checks():
    from safealign.config import benchmark_names, check_sections, load_benchmark
    for name in benchmark_names():
        typed = check_sections(load_benchmark(name))
        from safealign.eval.judges import judge_names
        assert typed["judge"].name in judge_names()


def test_a_judge_config_dropped_in_the_folder_is_a_judge_by_name(tmp_path):
    from safealign.eval.judges import JUDGES, judge_configs, judge_names
    shipped = judge_configs()
    assert "gpt4" in shipped and not set(shipped) & set(JUDGES)
    (tmp_path / "my-judge.toml").write_text('model = "llama-judge"\n')
    (tmp_path / "broken.toml").write_text("model = \n")
    names = judge_names(tmp_path)
    assert set(JUDGES) <= set(names) and "llama-judge" in names["my-judge"] and "unreadable" in names["broken"]


def test_override_of_a_section_the_file_leaves_to_defaults(tmp_path):
    run = run_with(tmp_path, "diagnostics.samples=2")          # tiny.toml has no [diagnostics] section
    assert run.typed["diagnostics"].samples == 2
    with pytest.raises(BenchError, match=r"\(diagnostics.sample\)"):
        run_with(tmp_path, "diagnostics.sample=2")


def test_override_of_a_train_key_the_file_leaves_to_its_default(tmp_path):
    """tiny.toml's [train] has no lora_rank: --set may still give it (planning checks every [train] key), and a
    typo there is still one line naming it, before any stage."""
    run = run_with(tmp_path, "train.lora_rank=4")
    step = next(s for s in run.graph if s.kind == "align")
    assert step.config["step"]["lora_rank"] == 4
    with pytest.raises(BenchError, match=r"\(train.lora_rnk\)"):
        run_with(tmp_path, "train.lora_rnk=4")
