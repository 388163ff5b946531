"""Run under `accelerate launch` (launch_configs/fsdp.yaml, 2 processes) by tests/test_sharded_loading.py. Process 0
is given the checkpoints (argv[1]), process 1 folders with only their configs and tokenizers (argv[2]): no weight
file to read. Both build the PPO's six models sharded and a score model's start (fit_score_model, 0 epochs);
process 0 prints one line per model saying whether what the shards hold, gathered, is a whole load's weights and
buffers exactly, and whether every process continues with the same torch random state."""
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from safealign import BenchError
from safealign.methods import ppo, ppo_models, score_model, sharding


def same(got: dict, want: dict) -> bool:
    return got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def whole_loads(root: Path) -> dict:
    """The six models as one process loads them (ppo_models.Models without FSDP)."""
    from transformers import AutoModelForCausalLM
    f32 = torch.float32
    return {"actor": AutoModelForCausalLM.from_pretrained(root / "sft", dtype=f32),
            "ref": AutoModelForCausalLM.from_pretrained(root / "sft"),
            "vr": score_model.load_score_model(root / "rm", head="token", dtype=f32),
            "vc": score_model.load_score_model(root / "cm", head="token", dtype=f32),
            "rm": score_model.load_score_model(root / "rm"), "cm": score_model.load_score_model(root / "cm")}


def held(model, root=None) -> tuple[dict, dict]:
    """(gathered weights, this process's buffers) of a sharded model, on the CPU (collective)."""
    prefix = "" if root is None else "model."
    weights = {k.removeprefix(prefix): v for k, v in sharding.full_model_state(root or model).items()}
    return weights, {k: v.cpu() for k, v in model.named_buffers()}


def refused():
    raise BenchError("score model 'x' has no score head")


def main(full: Path, configs: Path) -> None:
    rank = int(os.environ["RANK"])
    mine = full if rank == 0 else configs
    torch.manual_seed(rank)                # each process continues with process 0's state after loading
    m = ppo_models.Models(mine / "sft", mine / "rm", mine / "cm", ppo.PPOConfig(), steps=4, sharded=True)
    scorer_of = {"rm": m.scorers["reward"], "cm": m.scorers["cost"]}
    rng = torch.get_rng_state()
    got = {name: held(getattr(m, name), scorer_of.get(name)) for name in ("actor", "ref", "vr", "vc", "rm", "cm")}
    cfg = score_model.ScoreModelConfig(epochs=0)
    fitted, _ = score_model.fit_score_model(m.acc, cfg, mine / "sft", m.tok, [], "USER: {input} ASSISTANT:", seed=7)
    try:
        sharding.load_on_first(refused, lambda: None)
    except BenchError as e:              # on process 1 too, which never called `refused`: no hang
        print(f"process {rank} refused: {e}", flush=True)
    buffers = [None, None]
    dist.all_gather_object(buffers, ({k: v[1] for k, v in got.items()}, rng))
    if rank == 0:
        want = whole_loads(full)
        for name, model in want.items():
            bufs = {k: v for k, v in model.named_buffers()}
            ok = same(got[name][0], model.state_dict()) and all(same(b[0][name], bufs) for b in buffers)
            print(f"{name}: {'identical' if ok else 'DIFFERENT'}", flush=True)
        torch.manual_seed(7)
        start = score_model.load_score_model(full / "sft", new_head=True, dtype=torch.float32)
        print(f"score model start: {'identical' if same(fitted.state_dict(), start.state_dict()) else 'DIFFERENT'}")
        rng = torch.equal(buffers[0][1], buffers[1][1])
        print(f"random state: {'identical' if rng else 'DIFFERENT'}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
