"""A real Ray Serve run of the typed diffusion operators (toy shapes, CPU) replaying a slice of the
Azure trace, against the simulator's per-operator queueing for the same requests (issue 10).

    .venv/bin/python benchmarks/autoscale_ray_replay.py [--seconds 120] [--rate 1.2] [--json OUT.json]

1. Profile: each toy operator timed on this CPU (batch 1 and 2, 16 and 32 px; the profiler's format).
2. Requests: the trace's first ``seconds x rate`` arrivals, their span scaled to ``--seconds``, with the documented mix
   scaled to toy size (steps 1/4/20/50; 16/32 px for 512/1024; guidance on/off; ControlNet for 20%).
3. Ray Serve (local, CPU): TextEncoder x1, Denoiser x2, ControlNet x1 (called each step), VAEDecoder x1,
   one request at a time per replica (``max_ongoing_requests: 1``: Ray Serve's router queues the rest);
   requests sent from the driver at their arrival times. Each operator reports, per call, queueing
   (send to start: router queue plus the hand-off) and service.
4. Simulator (``sim/autoscale_des.py``): the same requests, replicas and one-at-a-time replicas on the
   measured profile. Queueing compared per operator: simulated wait + the hand-off measured on an idle
   app, against Ray's mean. Two simulator runs: on the profile as measured (a prediction), and with each
   operator's service time scaled to what Ray measured under load (the queueing model alone).
Tolerance: |simulated - measured| mean queueing within 25% of the measured or 25 ms, per operator.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from gensched.autoscale.profiles import ModelProfile
from gensched.sim.autoscale_des import Result
from gensched.sim.autoscale_workloads import ImageRequests

ROOT = Path(__file__).resolve().parents[1]
CONV = ROOT.parent / "shared" / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
OPS = [{"name": "text-encoder", "type": "TextEncoder"}, {"name": "denoiser", "type": "Denoiser"},
       {"name": "controlnet", "type": "ControlNet"}, {"name": "vae-decoder", "type": "VAEDecoder"}]
REPLICAS = {"text-encoder": 1, "denoiser": 2, "controlnet": 1, "vae-decoder": 1}
TOLERANCE = (0.25, 25.0)  # relative, absolute ms


def requests_for(seconds: float, rate: float, seed: int) -> ImageRequests:
    from gensched.sim.autoscale_workloads import diffusion_requests, load_arrivals

    arr = load_arrivals(CONV)
    n = max(2, int(seconds * rate))  # the trace's first n requests, their span scaled to ``seconds``
    arr = replace(arr, t=arr.t[:n] * (seconds / arr.t[n - 1]), prompt=arr.prompt[:n], output=arr.output[:n])
    req = diffusion_requests(arr, seed)
    pixels = np.where(req.pixels == 1024, 32, 16)
    workflow = np.where(req.workflow == 2, 2, 0)  # the toy app has no LoRA: those run the base workflow
    return replace(req, pixels=pixels, workflow=workflow, latent_factor=2)


def body(req: ImageRequests, i: int) -> dict:
    return {"prompt": f"request {i}", "steps": int(req.steps[i]), "pixels": int(req.pixels[i]),
            "guidance": 3.0 if req.guidance[i] else 0.0, "seed": i, "control": bool(req.workflow[i] == 2)}


def ray_run(req: ImageRequests, say: Callable[[str], None]) -> tuple[dict, dict, float]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from gensched_workloads.serve_app import build_app

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": 0})
        args = {"family": "Diffusion", "config": "toy", "seed": 0, "operators": OPS, "replicas": REPLICAS,
                "max_ongoing": dict.fromkeys(REPLICAS, 1), "num_cpus": 0.25}
        handle = serve.run(build_app(args), name="sd", route_prefix="/sd")
        for _ in range(4):  # warm-up, then the hand-off cost on an idle app (sequential requests)
            handle.generate.remote({**body(req, 0), "steps": 1, "control": True}).result()
        handle.stats.remote().result()
        for i in range(6):
            handle.generate.remote({**body(req, i % len(req)), "steps": 1, "control": True}).result()
        idle = {}
        for _, name, q, _s in handle.stats.remote().result():
            idle.setdefault(name, []).append(q)
        handoff = {k: statistics.median(v) for k, v in idle.items()}
        say(f"hand-off on an idle app (ms): {handoff}")
        t0 = time.time()
        pending = []
        for i in range(len(req)):
            delay = req.t[i] - (time.time() - t0)
            if delay > 0:
                time.sleep(delay)
            pending.append(handle.generate.remote(body(req, i)))
        lat = [p.result()[1] for p in pending]
        wall = time.time() - t0
        stats: dict[str, dict[str, list[float]]] = {}
        for _, name, q, s in handle.stats.remote().result():
            d = stats.setdefault(name, {"queue": [], "service": []})
            d["queue"].append(q)
            d["service"].append(s)
        say(f"Ray Serve: {len(req)} requests in {wall:.0f} s, latency p50 {np.percentile(lat, 50):.0f} ms")
        return stats, handoff, wall
    finally:
        serve.shutdown()
        ray.shutdown()


def simulate(prof: ModelProfile, req: ImageRequests, scale: dict[str, float] | None = None) -> Result:
    from gensched.sim.autoscale_des import DeploymentSpec, Strategy, replay

    prof = replace(prof, gpu_memory_gib=1024.0)  # CPU replicas: memory is not what limits them here
    if scale:
        prof = replace(prof, operators=tuple(
            replace(o, points=tuple((r[0], r[1], r[2] * scale.get(o.name, 1.0)) for r in o.points))
            for o in prof.operators))
    deps = (DeploymentSpec("text-encoder", ("te",), 1.0, 1), DeploymentSpec("denoiser", ("unet",), 1.0, 1),
            DeploymentSpec("controlnet", ("cn",), 1.0, 1), DeploymentSpec("vae-decoder", ("vae",), 1.0, 1))
    s = Strategy("ray-replay", deps, per_operator=True, fixed=tuple(REPLICAS[d.name] for d in deps), hop_ms=0.0,
                 drop_late=False)
    return replay(prof, req, s)


def profile_service_ms(prof: ModelProfile, req: ImageRequests) -> dict[str, float]:
    """Mean service of one call of each operator as Ray measures it, from the profile: the denoiser's
    call is a whole request (all its steps), the others one step or one image."""
    from gensched.autoscale.opmodel import call_ms

    ops = {o.name: o for o in prof.operators}
    items = np.where(req.guidance, 2, 1)
    ctx = ((req.pixels // req.latent_factor) ** 2).astype(float)
    control = req.workflow == 2
    per = {
        "text-encoder": [call_ms(ops["text-encoder"], int(k), 77.0, 1.0) for k in items],
        "denoiser": [s * call_ms(ops["denoiser"], int(k), c, 1.0)
                     for s, k, c in zip(req.steps, items, ctx, strict=True)],
        "controlnet": [call_ms(ops["controlnet"], int(k), c, 1.0) for k, c, on in zip(items, ctx, control, strict=True)
                       for _ in range(int(on))],
        "vae-decoder": [call_ms(ops["vae-decoder"], 1, c, 1.0) for c in ctx],
    }
    return {k: float(np.mean(v)) if v else 1.0 for k, v in per.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--rate", type=float, default=1.2, help="requests per second")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="/tmp/gensched-autoscale/ray-replay.json")
    args = ap.parse_args(argv)
    if not CONV.exists():
        print(f"missing {CONV} (../shared/data/README.md)", file=sys.stderr)
        return 2

    def say(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    from gensched_workloads import diffusion as d
    from gensched_workloads.diffusion_profile import measured

    req = requests_for(args.seconds, args.rate, args.seed)
    say(f"{len(req)} requests over {req.t[-1]:.0f} s; profiling the toy operators on this CPU")
    prof = measured(d.TOY, [(1, 16), (2, 16), (1, 32), (2, 32)], repeats=5)
    stats, handoff, wall = ray_run(req, say)
    predicted = simulate(prof, req)
    expected = profile_service_ms(prof, req)
    service_ratio = {name: statistics.mean(st["service"]) / expected[name] for name, st in stats.items()}
    calibrated = simulate(prof, req, service_ratio)
    rows, ok_all = [], True
    print("| operator | Ray Serve queueing ms (mean) | simulated, measured profile | simulated, service as in Ray "
          "| service ms Ray / profile | within tolerance |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name in REPLICAS:
        ray_q = statistics.mean(stats[name]["queue"])
        pred = predicted.deployments[name].queue_wait_mean_ms + handoff.get(name, 0.0)
        cal = calibrated.deployments[name].queue_wait_mean_ms + handoff.get(name, 0.0)
        ok = abs(cal - ray_q) <= max(TOLERANCE[0] * ray_q, TOLERANCE[1])
        ok_all &= ok
        rows.append({"operator": name, "ray_queue_ms": ray_q, "ray_queue_p95_ms": float(np.percentile(
            stats[name]["queue"], 95)), "predicted_queue_ms": pred, "calibrated_queue_ms": cal,
            "ray_service_ms": statistics.mean(stats[name]["service"]),
            "profile_service_ms": expected[name], "calls": len(stats[name]["queue"]),
            "within_tolerance": ok})
        print(f"| {name} | {ray_q:.0f} | {pred:.0f} | {cal:.0f} | {service_ratio[name]:.2f} | "
              f"{'yes' if ok else 'no'} |")
    out = {"requests": len(req), "seconds": args.seconds, "rate": args.rate, "wall_s": wall, "handoff_ms": handoff,
           "tolerance": {"relative": TOLERANCE[0], "absolute_ms": TOLERANCE[1]}, "operators": rows,
           "all_within_tolerance": ok_all, "load_average": os.getloadavg()[0], "profile": prof.source}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"\nall operators within tolerance (service as measured in Ray): {ok_all}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
