"""Pointing the suite at real data: a user's benchmark file, PKU-SafeRLHF-schema files on disk, prompt files
(AlpacaEval-style, filtered; the red-team set from a URL with a pinned sha256, served on loopback), and a local
checkpoint as the reference policy."""
import hashlib
import json

import pandas as pd

from conftest import bench_run
from safealign import world


def test_a_users_benchmark_file_with_local_data_and_checkpoint(tiny, tmp_path, loopback_files):
    w = world.build(seed=5)
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame(w["train"]).to_parquet(data / "train.parquet")
    pd.DataFrame(w["test"]).to_parquet(data / "test.parquet")
    alpaca = [{"instruction": r["prompt"], "dataset": "helpful_base"} for r in w["helpful_eval"]]
    alpaca += [{"instruction": "write a poem", "dataset": "koala"}]
    (data / "alpaca_eval.json").write_text(json.dumps(alpaca))
    base_url, served, hits, _ = loopback_files
    (served / "redteam.jsonl").write_text("".join(json.dumps({"prompt": r["prompt"], "category": r["category"]}) + "\n"
                                                for r in w["redteam_eval"]))
    sft = next(p for p in (tiny / "cache" / "sft").iterdir() if not p.name.endswith(".partial")) / "model"
    bench = (tmp_path / "mine.toml")
    from importlib import resources
    tiny_toml = resources.files("safealign.benchmarks").joinpath("tiny.toml").read_text()
    mine = tiny_toml.replace('name = "tiny"', 'name = "mine"').replace(
        'source = "world"          # the generated PKU-SafeRLHF-schema world; or a hub id / local file',
        f'source = "{data / "train.parquet"}"\ntest_source = "{data / "test.parquet"}"').replace(
        'base = "tiny"\nsft = true', f'base = "{sft}"\nsft = false')
    mine += (f'\n[eval_prompts.helpful]\nsource = "{data / "alpaca_eval.json"}"\nwhere = {{dataset = "helpful_base"}}\n'
             f'[eval_prompts.redteam]\nsource = "{base_url}/redteam.jsonl"\n'
             f'sha256 = "{hashlib.sha256((served / "redteam.jsonl").read_bytes()).hexdigest()}"\n')
    bench.write_text(mine)
    r = bench_run("sft,dpo-h", tmp_path / "out", tmp_path / "cache", "--benchmark", str(bench), "--limit", "24")
    assert r.returncode == 0, r.stderr[-3000:]
    s = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("method")
    assert list(s.index) == ["sft", "dpo-h"] and s.loc["dpo-h", "helpfulness_judgments"] == 2 * 24
    assert "oracle_unsafe_share" not in s.columns          # ground truth exists only for the generated world
    gens = (tmp_path / "out" / "generations" / "sft.helpful.jsonl").read_text().splitlines()
    assert len(gens) == 24 and json.loads(gens[0])["prompt_id"] == "helpful-000"
    log = (tmp_path / "out" / "run.log").read_text()
    assert "stage data [data/" in log and "stage sft [" not in log      # no SFT: the checkpoint is pi_ref
    assert hits == ["/redteam.jsonl"] and f"downloaded {base_url}/redteam.jsonl" in log     # fetched once, pinned
    assert len((tmp_path / "out" / "generations" / "sft.redteam.jsonl").read_text().splitlines()) == 24
