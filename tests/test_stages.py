import pytest

from safealign.stages import RunLog, Store, write_atomic


def make_store(tmp_path):
    return Store(tmp_path / "cache", RunLog(tmp_path / "run.log", echo=False))


def test_stage_computed_once_and_keyed_by_config_and_inputs(tmp_path):
    calls = []

    def fn(work):
        calls.append(work)
        (work / "out.txt").write_text("hello")

    store = make_store(tmp_path)
    a = store.run("s", {"x": 1}, {}, fn)
    assert (a / "out.txt").read_text() == "hello" and a.record["config"] == {"x": 1}
    assert store.run("s", {"x": 1}, {}, fn).path == a.path and len(calls) == 1
    b = store.run("s", {"x": 2}, {}, fn)
    c = store.run("t", {"x": 1}, {"up": a}, fn)
    d = store.run("t", {"x": 1}, {"up": b}, fn)          # same config, other input -> other key
    assert len({a.key, b.key, c.key, d.key}) == 4 and len(calls) == 4
    again = make_store(tmp_path)                           # a new process sees the same cache
    again.run("s", {"x": 1}, {}, fn)
    assert again.cached == ["s"] and again.computed == [] and len(calls) == 4
    assert "cached" in (tmp_path / "run.log").read_text()


def test_killed_stage_is_not_done_and_resumes_from_its_partial_folder(tmp_path):
    store = make_store(tmp_path)

    def crash(work):
        (work / "part1").write_text("kept")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.run("s", {}, {}, crash)
    key = store.key("s", {}, {})
    assert not (tmp_path / "cache" / "s" / key).exists()
    seen = []

    def finish(work):
        seen.append((work / "part1").read_text())
        (work / "part2").write_text("done")

    stage = store.run("s", {}, {}, finish)
    assert seen == ["kept"] and (stage / "part2").exists() and not stage.path.with_name(key + ".partial").exists()
    assert "resuming" in (tmp_path / "run.log").read_text()


def test_write_atomic_replaces_whole_file(tmp_path):
    p = tmp_path / "a" / "f.txt"
    write_atomic(p, "one")
    write_atomic(p, "two")
    assert p.read_text() == "two" and [f.name for f in p.parent.iterdir()] == ["f.txt"]
