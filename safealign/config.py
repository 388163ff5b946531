"""Benchmark configs: versioned TOML files in benchmarks/, plus dotted `--set key=value` overrides."""
from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path

from safealign import BenchError


def benchmark_names() -> list[str]:
    files = resources.files("safealign.benchmarks").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".toml"))


def load_benchmark(name_or_path: str) -> dict:
    """A benchmark by name (benchmarks/<name>.toml) or by the path of a user's own TOML file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        text = path.read_text()
    elif name_or_path in benchmark_names():
        text = resources.files("safealign.benchmarks").joinpath(f"{name_or_path}.toml").read_text()
    else:
        raise BenchError(f"unknown benchmark '{name_or_path}': choose one of {', '.join(benchmark_names())} "
                         "or give the path of a .toml file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BenchError(f"benchmark config {name_or_path} is not valid TOML: {e}") from None


def parse_value(text: str):
    """'3' -> 3, '0.1' -> 0.1, 'true' -> True, '[0.1, 0.05]' -> list; anything else stays a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config: dict, pairs: list[str]) -> dict:
    """Apply `section.key=value` overrides; an unknown section or key is an error, so typos surface."""
    config = copy.deepcopy(config)
    for pair in pairs:
        if "=" not in pair:
            raise BenchError(f"override '{pair}' has no '=': write it as section.key=value, e.g. train.epochs=1")
        dotted, value = pair.split("=", 1)
        *parents, leaf = dotted.strip().split(".")
        node = config
        for i, part in enumerate(parents):
            if part not in node and parents[:i] == ["methods"] and i == 1:
                node[part] = {}       # a method the benchmark file has no section for yet
            if not isinstance(node.get(part), dict):
                valid = ", ".join(k for k, v in node.items() if isinstance(v, dict))
                raise BenchError(f"override '{dotted}': no section '{part}'; sections here: {valid}")
            node = node[part]
        if leaf not in node and parents[:1] != ["methods"]:
            raise BenchError(f"override '{dotted}': no key '{leaf}' in [{'.'.join(parents)}]; "
                             f"keys there: {', '.join(node)}")
        node[leaf] = parse_value(value.strip())
    return config
