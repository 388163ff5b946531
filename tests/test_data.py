import json

import pandas as pd
import pytest

from safealign import BenchError, world
from safealign.data import load_preferences, load_prompts


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def rows():
    return world.build(seed=1)["train"][:20]


def test_loads_jsonl_json_and_parquet(tmp_path, rows):
    assert len(load_preferences(write_jsonl(tmp_path / "d.jsonl", rows))) == 20
    (tmp_path / "d.json").write_text(json.dumps(rows))
    assert load_preferences(str(tmp_path / "d.json"))[3] == rows[3]
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    got = load_preferences(str(tmp_path / "d.parquet"))
    assert got[5]["safer_response_id"] == rows[5]["safer_response_id"] and isinstance(got[5]["is_response_0_safe"], bool)


def one_line_error(fn, *args) -> str:
    with pytest.raises(BenchError) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_missing_column(tmp_path, rows):
    for r in rows:
        del r["safer_response_id"]
    msg = one_line_error(load_preferences, write_jsonl(tmp_path / "d.jsonl", rows))
    assert "missing column 'safer_response_id'" in msg and "d.jsonl" in msg


def test_id_outside_0_1(tmp_path, rows):
    rows[4]["better_response_id"] = 2
    msg = one_line_error(load_preferences, write_jsonl(tmp_path / "d.jsonl", rows))
    assert "row 4" in msg and "better_response_id" in msg and "0 or 1" in msg


def test_empty_prompt(tmp_path, rows):
    rows[2]["prompt"] = "  "
    assert "row 2: prompt is empty" in one_line_error(load_preferences, write_jsonl(tmp_path / "d.jsonl", rows))


def test_missing_file_and_bad_format(tmp_path):
    assert "does not exist" in one_line_error(load_preferences, str(tmp_path / "nope.jsonl"))
    (tmp_path / "d.txt").write_text("x")
    assert "unknown format" in one_line_error(load_preferences, str(tmp_path / "d.txt"))
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    assert "could not be read" in one_line_error(load_preferences, str(tmp_path / "bad.jsonl"))


def test_hub_id_offline_is_one_clear_line():
    msg = one_line_error(load_preferences, "PKU-Alignment/PKU-SafeRLHF-30K")
    assert "PKU-Alignment/PKU-SafeRLHF-30K" in msg and "local" in msg


def test_prompt_sets(tmp_path):
    alpaca = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "What is a cat?"}, {"instruction": "Name a dog."}])
    got = load_prompts(alpaca, prefix="helpful")
    assert [g["prompt_id"] for g in got] == ["helpful-000", "helpful-001"] and got[1]["prompt"] == "Name a dog."
    red = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "x?", "category": "Crime", "id": 7}])
    assert load_prompts(red)[0] == {"prompt_id": "7", "prompt": "x?", "category": "Crime"}
    bad = write_jsonl(tmp_path / "b.jsonl", [{"text": "x"}])
    assert "no prompt column" in one_line_error(load_prompts, bad)
    dup = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "x", "id": 1}, {"prompt": "y", "id": 1}])
    assert "duplicate" in one_line_error(load_prompts, dup)


def test_prompt_filter_picks_alpaca_evals_helpful_base(tmp_path):
    rows = [{"instruction": f"q{i}", "dataset": "helpful_base" if i % 3 == 0 else "koala"} for i in range(9)]
    (tmp_path / "alpaca_eval.json").write_text(json.dumps(rows))
    got = load_prompts(str(tmp_path / "alpaca_eval.json"), prefix="helpful", where={"dataset": "helpful_base"})
    assert [g["prompt"] for g in got] == ["q0", "q3", "q6"] and got[0]["prompt_id"] == "helpful-000"
    msg = one_line_error(load_prompts, str(tmp_path / "alpaca_eval.json"), "test", None, "p", {"source": "x"})
    assert "no column 'source'" in msg
    msg = one_line_error(load_prompts, str(tmp_path / "alpaca_eval.json"), "test", None, "p", {"dataset": "vicuna"})
    assert "empty after filtering" in msg
