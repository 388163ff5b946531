"""FSDP loading (methods/sharding.py load_on_first, spread): only process 0 reads a checkpoint's weights; the
other processes build each model on the meta device and get their shards from process 0."""
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import score_model, tiny_model
from safealign.launch import CONFIGS


def test_only_process_0_reads_weights_and_every_shard_is_the_checkpoints(tmp_path):
    """Process 1 is given folders without weight files (so reading one fails: the old code, which loaded every
    model whole on every process, stopped there). The six PPO models and a score model's fresh start, gathered
    from the shards, equal single-process loads exactly, buffers (rotary frequencies) included, on both
    processes; a BenchError while process 0 loads is raised on process 1 too."""
    full, configs = tmp_path / "full", tmp_path / "configs"
    tiny_model(full / "sft", layers=2)
    score_model(full / "rm", full / "sft", 1)
    score_model(full / "cm", full / "sft", 2)
    shutil.copytree(full, configs, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    assert not list(configs.rglob("*.safetensors"))
    script = Path(__file__).parent / "sharded_loading_check.py"
    out = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                          str(CONFIGS / "fsdp.yaml"), "--num_processes", "2", "--main_process_port", "29533",
                          str(script), str(full), str(configs)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if ": " in line and line.split(": ")[-1] in
             ("identical", "DIFFERENT")]
    assert lines == [f"{name}: identical" for name in ("actor", "ref", "vr", "vc", "rm", "cm", "score model start",
                                                       "random state")], out.stdout[-3000:]
    for rank in (0, 1):     # process 0's BenchError while loading is raised on every process
        assert f"process {rank} refused: score model 'x' has no score head" in out.stdout
