"""Command line: ``gensched run | simulate | crds | explain``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
        from gensched.sim.autoscale_cli import run_autoscale
        try:
            out = run_autoscale(Path(args.trace), args.model, args.gpu, args.slo_ttft_ms, args.slo_tbt_ms,
                                args.rate_scale, args.baseline, Path(args.json) if args.json else None)
        except (ValueError, OSError) as exc:
            print(f"gensched simulate autoscale: {exc}", file=sys.stderr)
            return 2
        autoscale_table(out)
        return 0
    if args.what == "timing":
        from gensched.sim.timing_cli import default_signals, print_table, run_timing
        from gensched.timing.sources.csv_file import SignalError
        signals = [Path(x) for x in args.signal.split(",")] if args.signal else default_signals()
        try:
            result = run_timing(signals, args.scenario, args.window, args.forecast_error, args.forecaster,
                                args.interruptible, args.repetitions, args.capacity, args.smoothing,
                                Path(args.json) if args.json else None, Path(args.plot) if args.plot else None)
        except (ValueError, OSError, SignalError) as exc:
            print(f"gensched simulate timing: {exc}", file=sys.stderr)
            return 2
        print_table(result)
        return 0
    if args.what == "packing":
        from gensched.sim.packing_cli import run_packing

        try:
            run_packing(Path(args.nodes_csv), Path(args.pods_csv), args.policy.split(","), args.inflation,
                        args.seeds, Path(args.json) if args.json else None, Path(args.plot) if args.plot else None,
                        mode=args.mode)
        except (OSError, ValueError) as exc:
            print(f"gensched simulate packing: {exc}", file=sys.stderr)
            return 2
        return 0
    from gensched.sim.tour import run_tour

    return run_tour(seed=args.seed, nodes=args.nodes, jobs=args.jobs, policy=args.policy)


def _cmd_explain(args: argparse.Namespace) -> int:
    from gensched.sim.explain import explain_file

    return explain_file(Path(args.file), Path(args.profile) if args.profile else None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gensched", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the operator (kopf) against the current kubeconfig or in-cluster")
    p.add_argument("-n", "--namespace", action="append", default=[],
                   help="watch only this namespace (repeatable); default: all namespaces")
    p.add_argument("--standalone", action="store_true", help="no peering with other operator instances")
    p.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness probe endpoint URL")
    p.add_argument("--metrics-port", type=int, default=9090, help="Prometheus metrics port (0: off)")
    p.add_argument("--webhook-port", type=int, default=0, help="serve the validating webhook here (0: off)")
    p.add_argument("--webhook-addr", default="0.0.0.0", help="address the webhook listens on")
    p.add_argument("--webhook-host", default=None, help="host name the API server calls (e.g. SVC.NS.svc)")
    p.add_argument("--webhook-insecure", action="store_true", help="plain HTTP (local development only)")
    p.add_argument("--webhook-certfile", default=None, help="TLS certificate (e.g. from cert-manager)")
    p.add_argument("--webhook-pkeyfile", default=None, help="TLS private key")
    p.add_argument("--webhook-cafile", default=None, help="CA bundle the API server trusts (caBundle)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("simulate", help="replay the decision core offline (no cluster needed)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--nodes", type=int, default=16, help="GPU nodes in the built-in synthetic cluster")
    p.add_argument("--jobs", type=int, default=200, help="jobs in the built-in synthetic mix")
    p.add_argument("--policy", default="all", help="packing strategy to show, or 'all' to compare")
    p.set_defaults(func=_cmd_simulate, what=None)
    what = p.add_subparsers(dest="what")
    pk = what.add_parser("packing", help="compare placement policies on a trace (Alibaba openb CSV format)")
    pk.add_argument("--nodes", dest="nodes_csv", required=True,
                    help="node list CSV (sn,cpu_milli,memory_mib,gpu,model)")
    pk.add_argument("--pods", dest="pods_csv", required=True, help="pod list CSV (openb_pod_list_*.csv format)")
    pk.add_argument("--policy", default="fgd,gensched,bestfit,packing,clustering,dotprod,random",
                    help="comma-separated: fgd, gensched, bestfit, packing, clustering, dotprod, random, firstfit")
    pk.add_argument("--inflation", type=float, default=1.3, help="workload as a multiple of GPU capacity")
    pk.add_argument("--seeds", type=int, default=10, help="number of seeds, from 42 (the FGD paper's)")
    pk.add_argument("--mode", choices=["fgd", "replay"], default="fgd",
                    help="fgd: the paper's arrival-only protocol; replay: creation/deletion times")
    pk.add_argument("--json", default=None, help="write results here")
    pk.add_argument("--plot", default=None, help="draw allocation curves to this PNG (needs matplotlib)")

    tm = what.add_parser("timing", help="time shifting on recorded carbon intensity (Let's Wait Awhile scenarios)")
    tm.add_argument("--signal", default=None,
                    help="comma-separated carbon CSVs (default: ger_ci, gb_ci, fr_ci from the shared data)")
    tm.add_argument("--scenario", choices=["nightly", "ml"], default="nightly")
    tm.add_argument("--window", default="8h", help="nightly: how far a job may move either way")
    tm.add_argument("--forecast-error", type=float, default=0.05, help="noise sd as a fraction of the mean")
    tm.add_argument("--forecaster", choices=["noisy-oracle", "history", "perfect"], default="noisy-oracle")
    tm.add_argument("--interruptible", action="store_true", help="ml: jobs may pause between 30-minute slots")
    tm.add_argument("--repetitions", type=int, default=10, help="noisy-oracle repetitions (seeds 0..N-1)")
    tm.add_argument("--capacity", type=int, default=None, help="ml: GPUs shared by all jobs (1-2 GPUs each)")
    tm.add_argument("--smoothing", type=int, default=None,
                    help="forecast smoothing in slots (default: 3 for a noisy forecast, else 1 = off)")
    tm.add_argument("--json", default=None, help="write results here")
    tm.add_argument("--plot", default=None, help="draw two weeks of each series with the chosen slots (PNG)")

    au = what.add_parser("autoscale", help="static vs model-level vs per-operator serving on an Azure LLM trace")
    au.add_argument("--trace", required=True, help="AzureLLMInferenceTrace_{conv,code}.csv format")
    au.add_argument("--model", default="llama-7b", help="llama-7b, llama-13b, llama-70b (modelled profiles)")
    au.add_argument("--gpu", default="h100", help="a100 or h100")
    au.add_argument("--slo-ttft-ms", type=float, default=1000.0)
    au.add_argument("--slo-tbt-ms", type=float, default=100.0)
    au.add_argument("--rate-scale", type=float, default=1.0, help="compress time: x requests per second")
    au.add_argument("--baseline", choices=["whole", "fractional"], default="whole",
                    help="whole-model replicas on whole GPUs, or on any GPU share")
    au.add_argument("--json", default=None)

    p = sub.add_parser("crds", help="write CRD YAML generated from the API models")
    p.add_argument("--out", default="crds")
    p.add_argument("--chart", default="charts/gensched/crds", help="also write here ('' to skip)")
    p.set_defaults(func=_cmd_crds)

    p = sub.add_parser("explain", help="validate a GenerativeJob/SchedulingPolicy file and show the decisions")
    p.add_argument("file")
    p.add_argument("--profile", default=None,
                   help="a measured operator profile (profiler JSON): preview how each operator is sized")
    p.set_defaults(func=_cmd_explain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
