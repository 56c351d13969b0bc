"""``gensched report`` arguments (argparse only; the report module is imported when the command runs)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="HTML page with plots: GPU-hours, energy, gCO2, cost and cost per output "
                                      "per namespace and job, savings from deferral, packing and autoscaling")
    p.add_argument("--prometheus", default=None, help="Prometheus URL scraping the operator")
    p.add_argument("--range", dest="range_", default="7d", metavar="RANGE",
                   help="window for savings from Prometheus (7d, 30d)")
    p.add_argument("--at", default=None, help="evaluate Prometheus at this RFC 3339 time (default: now)")
    p.add_argument("--from-json", action="append", default=[], metavar="FILE",
                   help="report data (--save-json) or `gensched simulate timing|autoscale|packing --json` output "
                        "(repeatable)")
    p.add_argument("--out", default="gensched-report.html", help="HTML page to write")
    p.add_argument("--png", default=None, help="also write the plots as one PNG picture")
    p.add_argument("--save-json", default=None, help="also write the collected data (re-render with --from-json)")
    p.add_argument("--title", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gensched.api.durations import parse_instant
    from gensched.observe.report import ReportError, run_report

    try:
        at: datetime | None = parse_instant(args.at) if args.at else None
        data = run_report(args.prometheus, args.range_, [Path(f) for f in args.from_json], Path(args.out),
                          Path(args.png) if args.png else None, Path(args.save_json) if args.save_json else None,
                          args.title, at)
    except (ReportError, ValueError) as exc:
        print(f"gensched report: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(data.jobs)} jobs, {len(data.comparisons)} savings"
          + (f"; {args.png}" if args.png else ""))
    return 0
