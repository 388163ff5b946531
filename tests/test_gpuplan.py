"""`bench plan`: the memory and time arithmetic on cases small enough to do by hand, and the table for `paper`."""
import pytest

from safealign import memplan as mp
from safealign.cli import main
from safealign.gpuplan import LLAMA_7B, Hardware, Need, hours, memory

SMALL = mp.Shape(hidden=4, layers=1, intermediate=8, vocab=10, heads=2, kv_heads=1)


def test_parameter_counts_by_hand():
    # kv width 4 * 1/2 = 2; layer: q,o 2*16 + k,v 2*4*2 + mlp 3*4*8 + norms 2*4 = 152; embed 40, norm 4, head 40
    assert mp.params(SMALL) == 40 + 152 + 4 + 40
    assert mp.params(mp.Shape(4, 1, 8, 10, 2, 1, tied=True)) == 40 + 152 + 4
    assert mp.params(SMALL, head_outputs=1) == 40 + 152 + 4 + 4           # a reward/cost model's one output
    assert mp.params(LLAMA_7B) == 6_738_415_616                          # LLaMA-7B's published count
    assert mp.lora_params(SMALL, rank=2) == 2 * ((4 + 4) * 2 + (4 + 2) * 2)   # q, o: 4->4; k, v: 4->2


def test_bytes_per_parameter_by_strategy():
    n = 1000
    assert mp.trained_bytes(n, "ddp", 8) == 16_000                       # 2 + 2 + 12 (ZeRO §3.1), nothing divided
    assert mp.trained_bytes(n, "fsdp", 8) == mp.trained_bytes(n, "zero3", 8) == 2_000
    assert mp.trained_bytes(n, "zero3-offload", 8) == 500               # bf16 weights + grads only, sharded
    assert mp.trained_bytes(n, "lora", 8, SMALL, 2) == 2 * n + 16 * 56   # frozen bf16 base + adapters under Adam
    assert mp.trained_bytes(n, "qlora", 8, SMALL, 2) == pytest.approx(n * 4.127 / 8 + 16 * 56)
    assert mp.frozen_bytes(n, "ddp", 8) == 2_000 and mp.frozen_bytes(n, "fsdp", 8) == 250


def test_activations_kv_cache_and_hours_by_hand():
    # 34 bytes x 10 tokens x hidden 4 for the one layer, + fp32 logits 4 x 10 x vocab 10
    assert mp.activation_bytes(SMALL, 10, checkpointing=False) == 1360 + 400
    assert mp.activation_bytes(SMALL, 10, checkpointing=True) == 2 * 10 * 4 + 1360 + 400
    assert mp.forward_bytes(SMALL, 10) == 1360 + 400
    assert mp.kv_cache_bytes(SMALL, 10) == 2 * 2 * 1 * 2 * 10             # k and v, bf16, kv width 2
    assert mp.gpu_hours(312e12 * 0.4 * 3600, 312, 0.4) == pytest.approx(1.0)
    assert mp.train_flops(10, 5, 100) == 6 * 10 * 100 + 2 * 5 * 100


def test_a_7b_dpo_step_on_8_gpus_under_fsdp_by_hand():
    """Policy trained (16 B/param) and reference frozen (2 B/param), both sharded 8 ways: 18 P / 8 bytes."""
    p = mp.params(LLAMA_7B)
    n = Need([(p, True), (p, False)], micro_tokens=2 * 8 * 512, flops=0)
    mem = memory(n, LLAMA_7B, Hardware(gpus=8, strategy="fsdp"))
    assert mem["models"] == pytest.approx(18 * p / 8 / 2**30)             # 14.1 GiB
    act = 2 * 8192 * 4096 * 32 + 34 * 8192 * 4096 + 4 * 8192 * 32000      # checkpointed layers + one layer + logits
    assert mem["activations"] == pytest.approx(act / 2**30)
    ddp = memory(n, LLAMA_7B, Hardware(gpus=8, strategy="ddp"))
    assert ddp["models"] == pytest.approx(18 * p / 2**30)                 # 113 GiB: does not fit 80 GiB


def test_decoding_is_bounded_by_reading_the_weights():
    p = 1_000_000_000
    n = Need([(p, False)], micro_tokens=1, flops=1.0, backward=False, weight_reads=3600)
    # 3,600 steps x 2 GB at 2 TB/s = 3,600 ms = 1 s... of 3600 s per hour
    assert hours(n, Hardware(gpu_bandwidth=2.0)) == pytest.approx(3600 * 2e9 / 2e12 / 3600)


def test_bench_plan_for_paper_on_8_and_on_1_gpu(capsys):
    assert main(["plan", "--benchmark", "paper", "--methods", "sacpo,saferlhf", "--gpus", "8"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in out.splitlines()[2:] if ln.strip()}
    assert "8 x 80 GiB, fsdp" in out and "policy 6.7B" in out and "GPU-hours" in out
    assert " yes " in lines["sacpo@0.025"] and "ref-logps" in lines["sacpo@0.025"]    # no reference held
    assert "frozen" in lines["dpo-h"] and "211 PPO steps" in lines["saferlhf"]
    # the suite's own loops shard too: PPO's six models at 1/8 each (45.9 GiB), the score models (20.4)
    assert " yes " in lines["saferlhf"] and " 45.9 " in lines["saferlhf"] and " 20.4 " in lines["reward"]
    # under ZeRO-3, which those loops do not have, they run as DDP: six whole 7B models do not fit, and the plan
    # says which strategy would
    assert main(["plan", "--benchmark", "paper", "--methods", "saferlhf", "--gpus", "8", "--strategy", "zero3"]) == 0
    zero3 = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[2:] if ln.strip()}
    assert "NO (runs as DDP): fsdp needs 45.9" in zero3["saferlhf"] and "own loop" in zero3["saferlhf"]
    assert main(["plan", "--benchmark", "paper", "--methods", "sacpo", "--gpus", "1", "--strategy", "ddp"]) == 0
    one = capsys.readouterr().out
    assert "NO: " in next(ln for ln in one.splitlines() if ln.strip().startswith("dpo-h "))
    # One GPU with LoRA: the DPO steps fit, and so does Safe RLHF's PPO, whose three frozen models are the bases
    # of its three trained ones (6.7B + 2 x 6.6B bf16 = 37.9 GiB with the adapters' states); the score models at
    # batch 128 in one micro-batch are tight, and micro-batches of 16 bring them down.
    assert main(["plan", "--benchmark", "paper", "--methods", "sacpo,saferlhf", "--gpus", "1", "--strategy",
                 "lora"]) == 0
    lora = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[2:] if ln.strip()}
    assert "adapters on" in lora["sacpo@0.025"] and " yes " in lora["sacpo@0.025"]
    assert "adapters on 6.7B + 6.6B + 6.6B" in lora["saferlhf"] and " yes " in lora["saferlhf"]
    assert "frozen" not in lora["saferlhf"] and " 37.9 " in lora["saferlhf"] and "x12" in lora["generate"]
    assert " tight " in lora["reward"]
    assert main(["plan", "--benchmark", "paper", "--methods", "saferlhf", "--gpus", "1", "--strategy", "lora",
                 "--set", "methods.saferlhf.score_model_micro_batch=16"]) == 0
    micro = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[2:] if ln.strip()}
    assert " yes " in micro["reward"] and " yes " in micro["cost"]


def test_bad_plans_are_one_line_errors(capsys, tmp_path):
    assert main(["plan", "--strategy", "zero5"]) == 2
    assert "unknown strategy 'zero5'" in capsys.readouterr().err
    assert main(["plan", "--benchmark", "tiny", "--methods", "dpo-h", "--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "train_pairs" in err and err.count("\n") == 1
    assert main(["plan", "--benchmark", "tiny", "--methods", "dpo-h", "--set", "plan.train_pairs=1282"]) == 0
    assert "0.6M" in capsys.readouterr().out
