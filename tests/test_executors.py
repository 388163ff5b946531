"""The Ray executor on a local Ray with 2 CPUs: independent stages run at once, a worker killed mid-stage leaves
no finished-looking stage and is retried, and a tiny run gives the same summary as under `local`."""
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import ray        # a dev dependency: without it these tests fail, never skip

from conftest import bench_run
from safealign.executors import execute
from safealign.plan import Graph, Spec
from safealign.stages import RunLog, Store
TESTS = str(Path(__file__).parent)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": TESTS}})
    yield
    ray.shutdown()


def store(tmp_path):
    return Store(tmp_path / "cache", RunLog(tmp_path / "run.log", echo=False))


def test_independent_stages_run_at_once_and_dependents_wait(local_ray, tmp_path):
    g = Graph()
    a = g.add(Spec("work", "stage_fns:sleepy", {"seconds": 4, "n": 1}, {}, "a"))
    b = g.add(Spec("work", "stage_fns:sleepy", {"seconds": 4, "n": 2}, {}, "b"))
    c = g.add(Spec("after", "stage_fns:upstream_sum", {}, {"a": a.key, "b": b.key}, "c"))
    s = store(tmp_path)
    done = execute(g, s, "ray")
    ta, tb = (json.loads((done[x.key] / "times.json").read_text()) for x in (a, b))
    assert ta["pid"] != tb["pid"]
    assert max(ta["start"], tb["start"]) < min(ta["end"], tb["end"]), (ta, tb)       # they overlapped
    assert (done[c.key] / "count.txt").read_text() == "2" and sorted(s.computed) == ["a", "b", "c"]
    again = store(tmp_path)
    execute(g, again, "ray")
    assert again.computed == [] and sorted(again.cached) == ["a", "b", "c"]


def test_a_worker_killed_mid_stage_is_retried_and_never_leaves_a_finished_looking_stage(local_ray, tmp_path):
    g = Graph()
    spec = g.add(Spec("fragile", "stage_fns:dies_once", {}, {}, "fragile"))
    done = execute(g, store(tmp_path), "ray")
    final = done[spec.key].path
    assert (final / "out.txt").read_text() == "done after a retry"
    assert (final / "attempt-1.txt").exists()          # the retry resumed in the killed attempt's folder
    assert not list(final.parent.glob("*.partial"))


def test_a_tiny_run_under_ray_matches_local(reference_only_cache, tmp_path):
    """Same numbers either way: the session's SFT reference, then DPO(H) (a quarter epoch), generation and judging
    under each executor into its own cache, one thread per stage in both (Ray gives a 1-CPU task one)."""
    small = ["--set", "train.epochs=0.25", "--set", "diagnostics.samples=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for executor in ("local", "ray"):
        cache = tmp_path / f"cache-{executor}"
        shutil.copytree(reference_only_cache, cache)
        r = bench_run("sft,dpo-h", tmp_path / executor, cache, "--executor", executor, *small, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[executor] = pd.read_csv(tmp_path / executor / "summary.csv")
    pd.testing.assert_frame_equal(runs["local"], runs["ray"])
    assert runs["ray"].set_index("method").loc["dpo-h", "helpfulness_win_rate"] != 0.5     # a model that moved
    assert "executor ray" in (tmp_path / "ray" / "run.log").read_text()
