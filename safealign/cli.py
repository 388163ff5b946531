"""The `bench` command: run, list, report, plot, compare."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safealign import BenchError
from safealign.perf import FIGURES as PERF_FIGURES


class Parser(argparse.ArgumentParser):
    """argparse, but an unknown option is one line that also lists the valid ones."""

    def error(self, message: str):
        valid = sorted(o for a in self._actions for o in a.option_strings if o.startswith("--"))
        self.exit(2, f"{self.prog}: error: {message} (valid options: {', '.join(valid)})\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="bench", description="Benchmark suite for safety-constrained LLM alignment.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    r = sub.add_parser("run", help="train, generate, judge and aggregate")
    r.add_argument("--benchmark", default="tiny", help="tiny | smol | paper, or the path of a .toml file")
    r.add_argument("--methods", default="sft,dpo-h", help="comma-separated method names (see `bench list`)")
    r.add_argument("--out", type=Path, help="results folder (default results/<benchmark>-<time>)")
    r.add_argument("--cache", type=Path, help="stage cache shared across runs (default $SAFEALIGN_CACHE or results/cache)")
    r.add_argument("--limit", type=int, help="cap training pairs and prompts per evaluation set")
    r.add_argument("--seed", type=int, help="the reference seed (pi_ref, and the one seed when --seeds is not given)")
    r.add_argument("--seeds", help="repeat every seed-dependent stage for each seed, e.g. 0,1,2 (pi_ref stays shared)")
    r.add_argument("--elo", action="store_true", help="judge every pair of models (not only vs SFT) and report Elo")
    r.add_argument("--dry-run", action="store_true", help="print the plan (stages cached and to run, estimated time, "
                   "judge calls and cost) and run nothing")
    r.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local: one stage after another here; ray: independent stages at once as Ray tasks")
    r.add_argument("--address", help="with --executor ray: a Ray cluster's address (default: start Ray on this machine)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. methods.dpo-h.beta=0.2 or train.epochs=1 (repeatable)")
    r.add_argument("--report-to", default="none", metavar="TRACKERS",
                   help="log training curves to tensorboard, wandb and/or mlflow (comma-separated; default none); "
                   "TensorBoard files go to each stage's tracking/ folder")
    sub.add_parser("list", help="methods, benchmarks and judges")
    rep = sub.add_parser("report", help="print the summary table of a results folder")
    rep.add_argument("folder", type=Path)
    pl = sub.add_parser("plot", help="redraw the figures of a results folder")
    pl.add_argument("folder", type=Path)
    pl.add_argument("--paper", action="store_true", help="overlay the SACPO paper's points (Table 3) as hollow markers")
    pl.add_argument("--per-seed", action="store_true", help="add each seed's own point to Figure 2 as a faint dot")
    cmp_ = sub.add_parser("compare", help="A minus B on every figure, paired by prompt and seed, with a 95% interval")
    cmp_.add_argument("folder", type=Path)
    cmp_.add_argument("a", help="a method label of the run, e.g. sacpo@0.025")
    cmp_.add_argument("b", help="another, e.g. saferlhf")
    pf = sub.add_parser("perf", help="the suite's speed figures beside their goals (saved with the machine's description)")
    pf.add_argument("--only", help="comma-separated figures to measure (default all): " + ", ".join(PERF_FIGURES))
    pf.add_argument("--quick", action="store_true", help="small cases (seconds, not the README's figures)")
    pf.add_argument("--out", type=Path, default=Path("results/perf"))
    pf.add_argument("--executor", default="local", choices=["local", "ray"], help="for the end-to-end figure")
    gp = sub.add_parser("plan", help="memory per GPU and GPU-hours of every stage of a run, before it runs")
    gp.add_argument("--benchmark", default="paper")
    gp.add_argument("--methods", default="sacpo,saferlhf")
    gp.add_argument("--gpus", type=int, default=8)
    gp.add_argument("--gpu-memory", type=float, default=80.0, help="GiB per GPU")
    gp.add_argument("--strategy", default="fsdp", help="ddp | fsdp | zero3 | zero3-offload | lora | qlora")
    gp.add_argument("--gpu-tflops", type=float, default=312.0, help="peak dense bf16 TFLOP/s (A100 312, H100 989)")
    gp.add_argument("--mfu", type=float, default=0.4, help="the share of that peak the run reaches")
    gp.add_argument("--gpu-bandwidth", type=float, default=2.0, help="TB/s of GPU memory (A100 2.0, H100 3.35)")
    gp.add_argument("--no-checkpointing", action="store_true", help="without activation checkpointing")
    gp.add_argument("--lora-rank", type=int, default=16)
    gp.add_argument("--seeds", help="as for bench run")
    gp.add_argument("--cache", type=Path)
    gp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    cv = sub.add_parser("exact-curve", help="exact benchmark: a method's distance to its optimum as the data grows")
    cv.add_argument("--sizes", default="16,64,256", help="preference pairs per prompt, e.g. 16,64,256")
    cv.add_argument("--seeds", default="0,1,2", help="training seeds at each size")
    cv.add_argument("--method", default="dpo-h")
    cv.add_argument("--out", type=Path, default=Path("results/exact-curve"))
    cv.add_argument("--cache", type=Path, help="stage cache (default $SAFEALIGN_CACHE or results/cache)")
    cv.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.commands = sub.choices
    return p


def cmd_run(args) -> None:
    from safealign.run import Run
    from safealign.tracking import set_report_to
    set_report_to(args.report_to)      # in the environment, not the configs: cache keys stay the same
    overrides = args.overrides + (["judge.all_pairs=true"] if args.elo else [])
    from safealign.run import resolve_seeds
    seeds = resolve_seeds(args.seeds) if args.seeds else None
    run = Run(args.benchmark, args.methods, args.out, args.cache, args.limit, args.seed, overrides, seeds=seeds,
              executor=args.executor, address=args.address, echo=not args.dry_run)
    if args.dry_run:
        print(run.dry_run())
    else:
        run.execute()


def cmd_list(args) -> None:
    from safealign.config import benchmark_names, load_benchmark
    from safealign.eval.judges import judge_names
    from safealign.registry import METHODS
    print("methods:")
    for name, m in METHODS.items():
        defaults = ", ".join(f"{k}={v}" for k, v in m.defaults.items())
        print(f"  {name:<14} {m.paper_row}" + (f"  [{defaults}]" if defaults else ""))
    print("benchmarks:")
    for name in benchmark_names():
        print(f"  {name:<14} {load_benchmark(name).get('description', '')}")
    print("judges:")
    for name, doc in judge_names().items():
        print(f"  {name:<14} {doc}")


def cmd_report(args) -> None:
    from safealign.report import format_table, load_summary
    print(format_table(load_summary(args.folder)))


def cmd_plot(args) -> None:
    from safealign.eval.plots import draw_all
    for path in draw_all(args.folder, paper=args.paper, per_seed=args.per_seed):
        print(path)


def cmd_compare(args) -> None:
    from safealign.report import compare_folder
    print(compare_folder(args.folder, args.a, args.b))


def cmd_perf(args) -> None:
    import os

    from safealign.perf import run_figures
    os.environ["SAFEALIGN_PERF_EXECUTOR"] = args.executor
    names = [n.strip() for n in args.only.split(",")] if args.only else list(PERF_FIGURES)
    print(run_figures(names, args.quick, args.out))


def cmd_plan(args) -> None:
    from safealign.gpuplan import Hardware, bench_plan
    from safealign.run import Run, resolve_seeds
    hw = Hardware(args.gpus, args.gpu_memory, args.strategy, args.gpu_tflops, args.mfu, args.gpu_bandwidth,
                  not args.no_checkpointing, args.lora_rank)
    # Planning sizes GPUs only: the judge (which would ask for its API key) is swapped for the free oracle.
    run = Run(args.benchmark, args.methods, None, args.cache, None, None, [*args.overrides, "judge.name=oracle"],
              seeds=resolve_seeds(args.seeds) if args.seeds else None, echo=False)
    print(bench_plan(run, hw))


def cmd_exact_curve(args) -> None:
    import pandas as pd

    from safealign.exact_eval import convergence
    from safealign.run import resolve_seeds
    try:
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        raise BenchError(f"--sizes '{args.sizes}': give whole numbers joined by commas, e.g. 16,64,256") from None
    rows = pd.DataFrame(convergence(sizes, resolve_seeds(args.seeds), args.out, args.cache, args.method,
                                    args.overrides))
    table = rows.groupby("pairs_per_prompt")[["exact_kl", "exact_tv", "implicit_corr"]].agg(["mean", "std"])
    print(f"{args.method} on exact, mean and std over {rows['seed'].nunique()} seeds:")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"-> {args.out / 'convergence.csv'}, {args.out / 'convergence.png'}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:       # report it from the subcommand, so the valid options listed are that command's
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        {"run": cmd_run, "list": cmd_list, "report": cmd_report, "plot": cmd_plot,
         "compare": cmd_compare, "exact-curve": cmd_exact_curve, "perf": cmd_perf,
         "plan": cmd_plan}[args.command](args)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
