"""``gensched simulate autoscale``: static vs model-level vs per-operator provisioning on a trace."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from gensched.autoscale.roofline import profile
from gensched.autoscale.sizing import SLO
from gensched.sim.autoscale_sim import load_trace, replay

KEYS = ("gpu_seconds", "energy_kwh", "ttft_p99_ms", "tbt_p99_ms", "slo_attainment", "decisions")


def run_autoscale(trace: Path, model: str, gpu: str, ttft_ms: float, tbt_ms: float, rate_scale: float,
                  baseline: str, json_out: Path | None, quiet: bool = False) -> dict:
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    tr = load_trace(trace, rate_scale)
    prof = profile(model, gpu)
    slo = SLO(ttft_ms, tbt_ms)
    shares = (1.0, 2.0, 4.0, 8.0) if baseline == "whole" else (0.1, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    say(f"{tr.name}: {len(tr.arrival)} requests over {tr.arrival[-1] / 60:.1f} min (rate x{rate_scale:g}); "
        f"{model} on {prof.gpu} (modelled: {prof.source})")
    out: dict = {"trace": str(trace), "model": model, "gpu": prof.gpu, "slo": {"ttft_ms": ttft_ms, "tbt_ms": tbt_ms},
                 "rate_scale": rate_scale, "baseline_shares": baseline, "modelled": prof.source,
                 "strategies": {}}
    for strategy in ("static", "model", "operator"):
        r = replay(tr, prof, slo, strategy, shares)
        say(f"  {strategy}: {r.gpu_seconds:.0f} GPU-s, SLO attainment {r.slo_attainment:.4f} ({r.wall_s:.1f} s)")
        d = asdict(r)
        out["strategies"][strategy] = {k: d[k] for k in (*KEYS, "ttft_ok", "tbt_ok", "peak_gpus", "shares", "wall_s")}
    if json_out:
        json_out.write_text(json.dumps(out, indent=2))
    return out


def print_table(out: dict) -> None:
    print(f"{Path(out['trace']).name} x{out['rate_scale']:g}, {out['model']} on {out['gpu']}, "
          f"SLO TTFT {out['slo']['ttft_ms']:g} ms / TBT {out['slo']['tbt_ms']:g} ms, baseline {out['baseline_shares']}")
    print(f"{'strategy':<10}{'GPU-s':>9}{'kWh':>8}{'TTFT p99':>10}{'TBT p99':>9}{'SLO att.':>9}{'decisions':>10}")
    for name, r in out["strategies"].items():
        print(f"{name:<10}{r['gpu_seconds']:>9.0f}{r['energy_kwh']:>8.3f}{r['ttft_p99_ms']:>10.0f}"
              f"{r['tbt_p99_ms']:>9.1f}{r['slo_attainment']:>9.4f}{r['decisions']:>10}")
