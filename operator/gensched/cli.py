"""Command line: ``gensched run | simulate | crds | explain``.

Error contract: every error is one line on stderr that names the argument (or file) and the
fix, and the exit status is 2; no traceback. Arguments are checked by argparse types, so the
message says ``argument --nodes: ...``; errors found later (a file that cannot be read, data
that does not fit) are turned into one line by :func:`main`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

CARBON_CSV_DIR_ENV = "GENSCHED_CARBON_CSV_DIR"  # read by gensched.timing.sources (CSV confinement)
PACKING_POLICIES = "fgd,gensched,bestfit,packing,clustering,dotprod,random"


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (usage is in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        from gensched.api.errors import one_line

        self.exit(2, f"{self.prog}: {one_line(message, 600)} (see {self.prog} --help)\n")


def _show(text: str) -> str:
    from gensched.api.errors import show

    return show(text, 60)


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_show(text)} is not a whole number: use {lo} to {hi}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range: use {lo} to {hi}")
        return value
    parse.__name__ = "int"
    return parse


def _float_in(lo: float, hi: float, lo_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_show(text)} is not a number") from None
        low_ok = value > lo if lo_open else value >= lo
        if not (low_ok and value <= hi):  # also refuses nan
            bound = f"above {lo:g}" if lo_open else f"at least {lo:g}"
            raise argparse.ArgumentTypeError(f"{value:g} is out of range: use a number {bound} and at most {hi:g}")
        return value
    parse.__name__ = "float"
    return parse


def _window(text: str) -> str:
    from datetime import timedelta

    from gensched.api.durations import check_duration

    try:
        check_duration(text, timedelta(days=7), "window")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _directory(text: str) -> str:
    p = Path(text)
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"{_show(text)} is not a directory: create it or name an existing one")
    return str(p.resolve())


def _canonical_policy(name: str) -> str:
    from gensched.packing.policies import ALIASES, POLICIES

    known = [*POLICIES, "Gensched"]
    by_lower = {k.lower(): k for k in known} | {k.lower(): v for k, v in ALIASES.items()}
    got = by_lower.get(name.strip().lower())
    if got is None:
        raise argparse.ArgumentTypeError(f"unknown packing strategy {_show(name)}: use one of {', '.join(known)}")
    return got


def _tour_policy(text: str) -> str:
    return "all" if text.strip().lower() == "all" else _canonical_policy(text)


def _policy_list(text: str) -> str:
    from gensched.sim.dynamic import POLICY_NAMES

    names = [p for p in text.split(",") if p.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no strategy given: use a comma-separated list such as fgd,bestfit")
    dynamic = {n.lower(): n for n in POLICY_NAMES}  # --mode dynamic: queue policies (gensched, fgd-fifo, ...)
    if all(p.strip().lower() in dynamic for p in names) and any(p.strip().lower() != "gensched" for p in names):
        return ",".join(dynamic[p.strip().lower()] for p in names)
    return ",".join(_canonical_policy(p) for p in names)


def _load_list(text: str) -> str:
    parse = _float_in(0, 10, lo_open=True)
    loads = [x for x in text.split(",") if x.strip()]
    if not loads:
        raise argparse.ArgumentTypeError("no load given: use e.g. 1.0 or 0.8,1.0,1.2")
    return ",".join(f"{parse(x.strip()):g}" for x in loads)


def _choice(loader: Callable[[], list[str]], what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        known = loader()
        if text not in known:
            raise argparse.ArgumentTypeError(f"unknown {what} {_show(text)}: use one of {', '.join(known)}")
        return text
    parse.__name__ = what
    return parse


def _models() -> list[str]:
    from gensched.autoscale.roofline import SHAPES

    return sorted(SHAPES)


def _gpus() -> list[str]:
    from gensched.autoscale.roofline import GPUS

    return sorted(GPUS)


def _cmd_crds(args: argparse.Namespace) -> int:
    from gensched.api.crdgen import crd_files

    out = Path(args.out)
    targets = [out] + ([Path(args.chart)] if args.chart else [])
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
        for name, text in crd_files().items():
            (target / name).write_text(text)
            print(f"wrote {target / name}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from gensched.controller.main import WebhookOptions, run_operator

    if args.carbon_csv_dir:  # the CSV provider reads only inside this directory (timing/sources/csv_file.py)
        os.environ[CARBON_CSV_DIR_ENV] = args.carbon_csv_dir
    webhook = WebhookOptions(port=args.webhook_port, addr=args.webhook_addr, host=args.webhook_host,
                             insecure=args.webhook_insecure, certfile=args.webhook_certfile,
                             pkeyfile=args.webhook_pkeyfile, cafile=args.webhook_cafile)
    return run_operator(
        namespaces=args.namespace,
        standalone=args.standalone,
        liveness=args.liveness,
        metrics_port=args.metrics_port,
        verbose=args.verbose,
        webhook=webhook,
    )


def _cmd_simulate(args: argparse.Namespace) -> int:
    if args.what == "autoscale":
        from gensched.sim.autoscale_cli import print_table as autoscale_table
        from gensched.sim.autoscale_cli import run as run_autoscale

        autoscale_table(run_autoscale(args))  # a bad --trace or argument: ValueError naming it (exit 2)
        return 0
    if args.what == "timing":
        from gensched.sim.timing_cli import default_signals, print_table, run_timing

        signals = [Path(x) for x in args.signal.split(",") if x.strip()] if args.signal else default_signals()
        if not signals:
            raise ValueError("--signal: no file given: name one or more carbon CSVs, comma-separated")
        result = run_timing(signals, args.scenario, args.window, args.forecast_error, args.forecaster,
                            args.interruptible, args.repetitions, args.capacity, args.smoothing,
                            Path(args.json) if args.json else None, Path(args.plot) if args.plot else None)
        print_table(result)
        return 0
    if args.what == "packing" and args.mode == "dynamic":
        from gensched.sim.dynamic import POLICY_NAMES, run_dynamic

        run_dynamic(Path(args.nodes_csv), Path(args.pods_csv), (args.policy or ",".join(POLICY_NAMES)).split(","),
                    [float(x) for x in args.load.split(",")], args.seeds, Path(args.json) if args.json else None,
                    Path(args.plot) if args.plot else None, workers=args.workers, warmup_h=args.warmup_h,
                    horizon_h=args.horizon_h, checkpoint_min=args.checkpoint_min, priorities=args.priorities,
                    estimates=args.estimates, noise_sigma=args.noise_sigma, cycle_s=args.cycle_s,
                    reservations=args.reservations)
        return 0
    if args.what == "packing":
        from gensched.sim.packing_cli import run_packing

        run_packing(Path(args.nodes_csv), Path(args.pods_csv), (args.policy or PACKING_POLICIES).split(","),
                    args.inflation, args.seeds, Path(args.json) if args.json else None,
                    Path(args.plot) if args.plot else None, mode=args.mode)
        return 0
    from gensched.sim.tour import run_tour

    return run_tour(seed=args.seed, nodes=args.nodes, jobs=args.jobs, policy=args.policy)


def _cmd_explain(args: argparse.Namespace) -> int:
    from gensched.sim.explain import explain_files

    return explain_files([Path(f) for f in args.files], Path(args.profile) if args.profile else None)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gensched", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    port = _int_in(0, 65535)

    p = sub.add_parser("run", help="run the operator (kopf) against the current kubeconfig or in-cluster")
    p.add_argument("-n", "--namespace", action="append", default=[],
                   help="watch only this namespace (repeatable); default: all namespaces")
    p.add_argument("--standalone", action="store_true", help="no peering with other operator instances")
    p.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness probe endpoint URL")
    p.add_argument("--metrics-port", type=port, default=9090, help="Prometheus metrics port (0: off)")
    p.add_argument("--carbon-csv-dir", type=_directory, default=os.environ.get(CARBON_CSV_DIR_ENV) or None,
                   help="the only directory SchedulingPolicies' timing.carbon.csvPath may read from "
                        f"(default: ${CARBON_CSV_DIR_ENV}; unset: the CSV carbon provider is refused)")
    p.add_argument("--webhook-port", type=port, default=0, help="serve the validating webhook here (0: off)")
    p.add_argument("--webhook-addr", default="0.0.0.0", help="address the webhook listens on")
    p.add_argument("--webhook-host", default=None, help="host name the API server calls (e.g. SVC.NS.svc)")
    p.add_argument("--webhook-insecure", action="store_true", help="plain HTTP (local development only)")
    p.add_argument("--webhook-certfile", default=None, help="TLS certificate (e.g. from cert-manager)")
    p.add_argument("--webhook-pkeyfile", default=None, help="TLS private key")
    p.add_argument("--webhook-cafile", default=None, help="CA bundle the API server trusts (caBundle)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("simulate", help="replay the decision core offline (no cluster needed)")
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=7)
    p.add_argument("--nodes", type=_int_in(1, 10_000), default=16, help="GPU nodes in the built-in synthetic cluster")
    p.add_argument("--jobs", type=_int_in(1, 100_000), default=200, help="jobs in the built-in synthetic mix")
    p.add_argument("--policy", type=_tour_policy, default="all",
                   help="packing strategy to show, or 'all' to compare")
    p.set_defaults(func=_cmd_simulate, what=None)
    what = p.add_subparsers(dest="what")
    pk = what.add_parser("packing", help="compare placement policies on a trace (Alibaba openb CSV format)")
    pk.add_argument("--nodes", dest="nodes_csv", required=True,
                    help="node list CSV (sn,cpu_milli,memory_mib,gpu,model)")
    pk.add_argument("--pods", dest="pods_csv", required=True, help="pod list CSV (openb_pod_list_*.csv format)")
    pk.add_argument("--policy", type=_policy_list, default=None,
                    help="comma-separated: fgd, gensched, bestfit, packing, clustering, dotprod, random, firstfit "
                         f"(default {PACKING_POLICIES}); --mode dynamic: gensched, fgd-fifo, bestfit-fifo, "
                         "fgd-backfill (default all four)")
    pk.add_argument("--inflation", type=_float_in(0, 100, lo_open=True), default=1.3,
                    help="workload as a multiple of GPU capacity (above 0, at most 100)")
    pk.add_argument("--seeds", type=_int_in(1, 1000), default=10, help="number of seeds, from 42 (the FGD paper's)")
    pk.add_argument("--mode", choices=["fgd", "replay", "dynamic"], default="fgd",
                    help="fgd: the paper's arrival-only protocol; replay: creation/deletion times; dynamic: Poisson "
                         "arrivals with trace durations through the scheduling cycle's queue (docs/benchmarks.md)")
    dy = pk.add_argument_group("--mode dynamic")
    dy.add_argument("--load", type=_load_list, default="1", help="offered GPU load(s) as a multiple of capacity, "
                    "comma-separated (e.g. 0.8,1.0,1.2; the JSON is keyed by load when more than one)")
    dy.add_argument("--warmup-h", type=_float_in(0, 1000), default=1.0, help="hours discarded after the warm start")
    dy.add_argument("--horizon-h", type=_float_in(0, 1000, lo_open=True), default=5.0,
                    help="hours simulated in all (measured: warm-up to horizon)")
    dy.add_argument("--checkpoint-min", type=_float_in(0, 10_000, lo_open=True), default=30.0,
                    help="interruptible (BE) jobs checkpoint every so many minutes of run time")
    dy.add_argument("--priorities", choices=["equal", "qos"], default="equal",
                    help="equal: one priority for all; qos: LS, Burstable, Guaranteed above BE")
    dy.add_argument("--estimates", choices=["exact", "noisy", "none"], default="exact",
                    help="duration estimates the scheduler gets: the trace's, x lognormal noise, or none")
    dy.add_argument("--noise-sigma", type=_float_in(0, 5), default=1.0, help="sigma of the lognormal estimate noise")
    dy.add_argument("--cycle-s", type=_float_in(1, 300), default=10.0,
                    help="a cycle runs at the next multiple of this many seconds after an arrival or departure "
                         "(1: every second with one)")
    dy.add_argument("--reservations", type=_int_in(1, 100), default=1,
                    help="gensched: blocked jobs that get a node held for them (1: EASY backfill)")
    dy.add_argument("--workers", type=_int_in(1, 64), default=1, help="processes (one (load, seed) each)")
    pk.add_argument("--json", default=None, help="write results here")
    pk.add_argument("--plot", default=None, help="draw allocation curves to this PNG (needs matplotlib)")

    tm = what.add_parser("timing", help="time shifting on recorded carbon intensity (Let's Wait Awhile scenarios)")
    tm.add_argument("--signal", default=None,
                    help="comma-separated carbon CSVs, any year and region (default: ger_ci, gb_ci, fr_ci "
                         "from the shared data)")
    tm.add_argument("--scenario", choices=["nightly", "ml"], default="nightly")
    tm.add_argument("--window", type=_window, default="8h",
                    help="nightly: how far a job may move either way (at most 7d)")
    tm.add_argument("--forecast-error", type=_float_in(0, 10), default=0.05,
                    help="noise sd as a fraction of the mean")
    tm.add_argument("--forecaster", choices=["noisy-oracle", "history", "perfect"], default="noisy-oracle")
    tm.add_argument("--interruptible", action="store_true", help="ml: jobs may pause between 30-minute slots")
    tm.add_argument("--repetitions", type=_int_in(1, 1000), default=10,
                    help="noisy-oracle repetitions (seeds 0..N-1)")
    tm.add_argument("--capacity", type=_int_in(2, 1_000_000), default=None,
                    help="ml: GPUs shared by all jobs (1-2 GPUs each)")
    tm.add_argument("--smoothing", type=_int_in(1, 48), default=None,
                    help="forecast smoothing in slots (default: 3 for a noisy forecast, else 1 = off)")
    tm.add_argument("--json", default=None, help="write results here")
    tm.add_argument("--plot", default=None, help="draw two weeks of each series with the chosen slots (PNG)")

    au = what.add_parser("autoscale", help="static vs model-level vs per-operator serving on a trace (diffusion, "
                                           "MoE or dense LLM)")
    au.add_argument("--workload", choices=["diffusion", "moe", "llm"], default="llm",
                    help="diffusion pipeline (SD 1.5 shapes), mixture of experts (Mixtral) or dense LLM (Llama)")
    au.add_argument("--trace", required=True,
                    help="arrivals: a CSV with a timestamp column (the Azure LLM trace format adds token counts)")
    au.add_argument("--model", default=None,
                    help="llm: llama-7b, llama-13b, llama-70b; moe: mixtral-8x7b; diffusion: sd15 (the default)")
    au.add_argument("--profile", default=None,
                    help="diffusion: a measured operator profile (profiler JSON) instead of the modelled one")
    au.add_argument("--fixed-gpus", type=_int_in(1, 4096), default=None,
                    help="also find the goodput each strategy sustains at >= 99%% SLO attainment on N GPUs")
    au.add_argument("--tune-seconds", type=_float_in(0, 1e7, lo_open=True), default=450.0,
                    help="diffusion: tune both sides on the first S seconds of the (scaled) trace")
    au.add_argument("--seed", type=_int_in(0, 2**31 - 1), default=0, help="seed of the request mix and lengths")
    au.add_argument("--gpu", type=_choice(_gpus, "gpu"), default="h100", help="a100 or h100")
    au.add_argument("--slo-ttft-ms", type=_float_in(0, 3_600_000, lo_open=True), default=1000.0)
    au.add_argument("--slo-tbt-ms", type=_float_in(0, 3_600_000, lo_open=True), default=100.0)
    au.add_argument("--rate-scale", type=_float_in(0, 10_000, lo_open=True), default=1.0,
                    help="compress time: x requests per second (above 0)")
    au.add_argument("--baseline", choices=["whole", "fractional"], default="whole",
                    help="ignored: the model level is grid-tuned over whole and fractional GPU shares")
    au.add_argument("--json", default=None)

    p = sub.add_parser("crds", help="write CRD YAML generated from the API models")
    p.add_argument("--out", default="crds")
    p.add_argument("--chart", default="charts/gensched/crds", help="also write here ('' to skip)")
    p.set_defaults(func=_cmd_crds)

    p = sub.add_parser("explain", help="validate GenerativeJob/SchedulingPolicy files and show the decisions")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="YAML manifests (several files or a glob; a policy marked default in any applies to all)")
    p.add_argument("--profile", default=None,
                   help="a measured operator profile (profiler JSON): preview how each operator is sized")
    p.set_defaults(func=_cmd_explain)

    from gensched.observe.report_cli import add_parser as add_report_parser

    add_report_parser(sub)  # gensched report
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; known errors become one line on stderr and exit status 2."""
    from gensched.api.errors import one_line
    from gensched.timing.sources.base import SignalError

    args = build_parser().parse_args(argv)
    where = " ".join(x for x in ("gensched", args.command, getattr(args, "what", None)) if x)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gensched simulate | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except (ValueError, OSError, SignalError) as exc:  # SpecError, ProfileError, yaml and file errors too
        print(f"{where}: {one_line(_describe(exc), 900)}", file=sys.stderr)
        return 2


def _describe(exc: BaseException) -> str:
    """The message of a known error; file errors name the file and what is wrong."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc.__class__.__name__}"
    return str(exc) or exc.__class__.__name__


if __name__ == "__main__":
    sys.exit(main())
