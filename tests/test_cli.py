import subprocess
import sys

import pytest

from safealign import BenchError
from safealign.cli import main
from safealign.config import apply_overrides, load_benchmark


def bench(*args):
    return subprocess.run([sys.executable, "-m", "safealign.cli", *args], capture_output=True, text=True)


def test_unknown_method_benchmark_option_are_one_line_errors(tmp_path):
    r = bench("run", "--methods", "sft,ppo-magic", "--out", str(tmp_path / "o"), "--cache", str(tmp_path / "c"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "unknown method 'ppo-magic'" in r.stderr and "dpo-h" in r.stderr
    r = bench("run", "--benchmark", "huge")
    assert r.returncode == 2 and "unknown benchmark 'huge'" in r.stderr and "tiny" in r.stderr
    r = bench("run", "--epochs", "3")
    assert r.returncode == 2 and "--epochs" in r.stderr and "--methods" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "c").exists()              # nothing was trained before the error


def test_list_names_methods_benchmarks_judges(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("dpo-h", "DPO(H) beta 0.1", "tiny", "smol", "paper", "oracle"):
        assert word in out


def test_overrides(capsys):
    cfg = load_benchmark("tiny")
    new = apply_overrides(cfg, ["methods.dpo-h.beta=0.5", "train.epochs=1", "methods.other.x=[1, 2]"])
    assert new["methods"]["dpo-h"]["beta"] == 0.5 and new["train"]["epochs"] == 1
    assert new["methods"]["other"]["x"] == [1, 2] and cfg["train"]["epochs"] == 2
    with pytest.raises(BenchError, match="no key 'temprature' in \\[generation\\]"):
        apply_overrides(cfg, ["generation.temprature=1"])
    # [train] may take a key the file leaves to its default; a typo there fails when the run is planned
    assert apply_overrides(cfg, ["train.epoch=1"])["train"]["epoch"] == 1
    code = main(["run", "--dry-run", "--methods", "dpo-h", "--set", "train.epoch=1"])
    err = capsys.readouterr().err
    assert code == 2 and "(train.epoch)" in err and err.count("\n") == 1
    with pytest.raises(BenchError, match="no '='"):
        apply_overrides(cfg, ["train.epochs"])


def test_bad_method_setting_fails_before_training(tmp_path, capsys):
    code = main(["run", "--methods", "dpo-h", "--set", "methods.dpo-h.bta=0.1", "--cache", str(tmp_path / "c"),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "unknown setting 'bta'" in err and "beta" in err and not (tmp_path / "c").exists()


def test_report_on_missing_folder(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no summary.csv" in capsys.readouterr().err
