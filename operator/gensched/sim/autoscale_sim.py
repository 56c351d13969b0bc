"""Replay of an LLM inference trace (Azure format: TIMESTAMP, ContextTokens, GeneratedTokens)
under three provisioning strategies, on the modelled performance of ``autoscale/perf.py``:

- ``static``: whole-model replicas sized once for the 95th-percentile load of the hour;
- ``model``: whole-model replicas, autoscaled;
- ``operator``: each model operator (typed: embedding, attention, FFN or experts, LM head) its own
  deployment, autoscaled on its own.

Fluid, one-second steps. Prompts queue FIFO and are served in chunks inside decode iterations
(chunked prefill); each decoding sequence gets one token per iteration; the iteration time is the
TBT of every token generated in that second. Replica sizes (GPU shares) are tuned for the trace's
p95 load (``choose_shares``), replica counts every ``loop_s`` for the forecast load (``size``). New
replicas serve after a modelled start-up (fixed cost + weights / load speed); scale-down waits for a
stable minute. Replicas are placed by the packing engine as they start (``GpuCounter``): whole GPUs
are counted (``gpu_seconds``) beside the sum of shares (``gpu_seconds_fractional``); memory bandwidth
drawn beyond the GPUs in use slows memory-bound work (contention). What is modelled: every latency
and power number (roofline profiles; power = idle per GPU in use + the dynamic energy of the work done,
compute-bound work at the full range, memory-bound at half, ``dynamic_joules``). What is measured: the
trace's arrivals and token counts, and the replay's own wall time.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from gensched.autoscale.perf import Allocation, bandwidth_demand, iteration_ms, max_sequences, split_ms
from gensched.autoscale.profiles import ModelProfile, ProfileError
from gensched.autoscale.sizing import OPERATOR_SHARES, SLO, Load, choose_shares, size
from gensched.sim.autoscale_packing import GpuCounter

INTERVAL_S = 10  # autoscaler period (model level, static)
PER_OPERATOR_LOOP_S = 2  # per-operator control loop period (small replicas are cheap to change)
WINDOW_S = 30  # load observed over this window
STABLE_S = 60  # scale down only after this long
FORECAST_HEADROOM = 1.2
CLEAR_S = 0.5  # waiting prompts are served within this much time when the TBT SLO allows


@dataclass
class Trace:
    arrival: np.ndarray  # seconds from the first request
    prompt: np.ndarray
    output: np.ndarray
    name: str = ""


def load_trace(path: str | Path, rate_scale: float = 1.0) -> Trace:
    """``rate_scale`` > 1 compresses time (more requests per second, same shape)."""
    t, p, o = [], [], []
    with Path(path).open() as fh:
        for row in csv.DictReader(fh):
            t.append(datetime.fromisoformat(row["TIMESTAMP"][:26]).timestamp())
            p.append(int(row["ContextTokens"]))
            o.append(max(1, int(row["GeneratedTokens"])))
    if not t:
        raise ValueError(f"{path}: no requests")
    ts = np.array(t)
    order = np.argsort(ts, kind="stable")
    return Trace((ts[order] - ts[order][0]) / rate_scale, np.array(p)[order], np.array(o)[order], Path(path).name)


@dataclass
class StrategyResult:
    strategy: str
    gpu_seconds: float = 0.0  # whole GPUs in use after packing
    gpu_seconds_fractional: float = 0.0  # sum of the replicas' shares
    energy_kwh: float = 0.0
    goodput_rps: float = 0.0  # requests meeting both SLOs per second of trace
    ttft_p99_ms: float = 0.0
    tbt_p99_ms: float = 0.0
    slo_attainment: float = 0.0
    decisions: int = 0
    peak_gpus: float = 0.0
    ttft_ok: float = 0.0  # share of requests within the TTFT SLO
    tbt_ok: float = 0.0  # share of requests whose mean TBT is within the SLO
    shares: list[float] = field(default_factory=list)
    replicas_timeline: list[list[int]] = field(default_factory=list)
    wall_s: float = 0.0


def _load_between(tr: Trace, t0: float, t1: float) -> Load:
    i0, i1 = np.searchsorted(tr.arrival, [t0, t1])
    if i1 <= i0:
        return Load(0.0, float(tr.prompt.mean()), float(tr.output.mean()))
    return Load((i1 - i0) / max(t1 - t0, 1e-9), float(tr.prompt[i0:i1].mean()), float(tr.output[i0:i1].mean()))


def forecast(tr: Trace, sec: float, headroom: float, backlog_tokens: float) -> Load:
    """What the control loop plans for: the last window's rate x ``headroom``, with the waiting prompt
    tokens (the queue it sees) added as if they arrived over the next window."""
    seen = _load_between(tr, max(0, sec - WINDOW_S), sec)
    rate = max(seen.rate, 1e-3) * headroom
    prompt = seen.prompt + backlog_tokens / (rate * WINDOW_S)
    return Load(rate, prompt, seen.output)


def p95_load(tr: Trace, headroom: float = FORECAST_HEADROOM) -> Load:
    """The load static provisioning and replica sizing are planned for: the 95th percentile of the
    30-second arrival rate (x ``headroom``) with the trace's mean lengths."""
    horizon = math.ceil(tr.arrival[-1]) + 1
    ref = _load_between(tr, 0, horizon)
    peak_windows = [_load_between(tr, s, s + WINDOW_S) for s in range(0, horizon, INTERVAL_S)]
    p95_rate = float(np.percentile([w.rate for w in peak_windows], 95))
    return Load(p95_rate * headroom, ref.prompt, ref.output)


def replay(tr: Trace, profile: ModelProfile, slo: SLO, strategy: str,
           baseline_shares: tuple[float, ...], loop_s: float | None = None, start_s: float | None = None,
           gpus: int | None = None, packing: str = "GpuPacking",
           shares: tuple[float, ...] | None = None, headroom: float = FORECAST_HEADROOM) -> StrategyResult:
    """``loop_s`` / ``start_s``: control-loop period and replica start time (defaults: by strategy and
    size); ``gpus``: a cluster of that many GPUs (scale-ups that do not fit are not made);
    ``shares``: replica sizes to use instead of tuning them; ``headroom``: load planned over the forecast."""
    t_wall = time.perf_counter()
    ops = profile.operators
    gpu_gib = profile.gpu_memory_gib
    pipelined = strategy == "operator"
    loop = int(loop_s if loop_s is not None else (PER_OPERATOR_LOOP_S if pipelined else INTERVAL_S))
    horizon = math.ceil(tr.arrival[-1]) + 1
    ref = _load_between(tr, 0, horizon)
    ref95 = p95_load(tr, headroom)
    if shares is None:
        shares = choose_shares(profile, ref95, slo, pipelined, OPERATOR_SHARES if pipelined else baseline_shares)
    # on a fixed cluster no operator can have more replicas than its GPUs hold (bounds the search too)
    replica_cap = 256 if gpus is None else max(1, min(256, int(gpus / min(shares))))
    try:
        alloc = size(ops, shares, pipelined, ref95, slo, gpu_gib, max_replicas=replica_cap)
    except ProfileError:
        if gpus is None:
            raise
        alloc = Allocation(tuple(op.name for op in ops) if pipelined else ("model",),
                           tuple(max(1, int(gpus / len(shares) / s)) for s in shares), shares, pipelined)
    counter = GpuCounter(gpu_gib, packing, gpus)
    alloc = _place(counter, alloc)
    res = StrategyResult(strategy, shares=list(shares))
    ready = [np.zeros(r) for r in alloc.replicas]  # per operator: time each replica becomes ready
    start_cost = [profile.start_seconds(op) for op in ops] if pipelined else [profile.start_seconds(profile.whole())]
    if start_s is not None:
        start_cost = [start_s] * len(start_cost)
    stretch = 1.0
    low_since: list[float | None] = [None] * len(shares)

    n = len(tr.arrival)
    ttft = np.full(n, np.nan)
    prefill_left = tr.prompt.astype(float).copy()
    tokens_left = tr.output.astype(float).copy()
    tbt_sum = np.zeros(n)
    tbt_tokens = np.zeros(n)
    tbt_hist_vals: list[float] = []
    tbt_hist_w: list[float] = []
    queue_head = 0  # requests before this index have finished prefill
    arrived = 0
    decoding = np.zeros(n, dtype=bool)
    for sec in range(horizon + 600):
        if arrived >= n and not decoding.any() and queue_head >= n:
            break
        arrived = int(np.searchsorted(tr.arrival, sec + 1))
        # Autoscaling (not for static): forecast from the last window, size, apply with start-up delay.
        if strategy != "static" and sec % loop == 0 and sec > 0:
            fc = forecast(tr, sec, headroom, float(prefill_left[queue_head:arrived].sum()))
            try:
                want = size(ops, shares, pipelined, fc, slo, gpu_gib, start=alloc.replicas,
                            max_replicas=replica_cap).replicas
            except ProfileError:
                want = tuple(r + 1 for r in alloc.replicas)
            new = list(alloc.replicas)
            for i, (w, cur) in enumerate(zip(want, alloc.replicas, strict=True)):
                if w > cur:
                    new[i] = w
                    ready[i] = np.concatenate([ready[i], np.full(w - cur, sec + start_cost[i])])
                    low_since[i] = None
                elif w < cur:
                    low_since[i] = sec if low_since[i] is None else low_since[i]
                    if sec - low_since[i] >= STABLE_S:
                        new[i] = w
                        ready[i] = np.sort(ready[i])[:w]
                        low_since[i] = None
                else:
                    low_since[i] = None
            if tuple(new) != alloc.replicas:
                res.decisions += 1
                placed = _place(counter, alloc.with_replicas(tuple(new)))
                for i, (w, got) in enumerate(zip(new, placed.replicas, strict=True)):
                    if got < w:  # the cluster is full: the replicas that did not fit never start
                        ready[i] = np.sort(ready[i])[:got]
                alloc = placed
        serving = alloc.with_replicas(tuple(max(1, int((rd <= sec).sum())) for rd in ready))
        whole = counter.whole
        res.gpu_seconds += whole
        res.gpu_seconds_fractional += alloc.gpus
        res.peak_gpus = max(res.peak_gpus, whole)
        if sec % INTERVAL_S == 0:
            res.replicas_timeline.append(list(alloc.replicas))
        # Admission: prefill only as many sequences as the KV memory holds.
        active = np.flatnonzero(decoding)
        ctx = float((tr.prompt[active] + (tr.output[active] - tokens_left[active])).mean()) if len(active) else \
            float(ref.ctx)
        cap = max_sequences(ops, serving, ctx, gpu_gib)
        backlog = float(prefill_left[queue_head:arrived].sum()) if arrived > queue_head else 0.0
        n_dec = len(active)
        # Chunked prefill: enough prompt tokens per iteration to clear the waiting prompts within
        # CLEAR_S, but never so many that an iteration exceeds 90% of the TBT SLO.
        def tau(c: float, serving: Allocation = serving, n_dec: int = n_dec, ctx: float = ctx,
                stretch: float = stretch) -> float:
            return iteration_ms(ops, serving, n_dec, ctx, c, stretch)
        chunk = 0.0
        if backlog > 0 and n_dec < cap:
            if n_dec == 0:
                chunk = backlog
            else:
                limit = 0.9 * slo.tbt_ms
                lo, hi = 16.0, max(16.0, backlog)  # the largest chunk the TBT allows (tau grows with it)
                if tau(hi) > limit:
                    for _ in range(40):
                        mid = (lo + hi) / 2
                        lo, hi = (mid, hi) if tau(mid) <= limit else (lo, mid)
                    c_max = lo
                else:
                    c_max = hi
                need = 16.0
                for _ in range(30):
                    need = min(c_max, max(16.0, backlog * tau(need) / (1000 * CLEAR_S)))
                chunk = need
        it = tau(chunk)
        iters = 1000.0 / it if it > 0 else 0.0
        work_j = dynamic_joules(profile, ops, serving, n_dec, ctx, chunk) * iters if it > 0 else 0.0
        res.energy_kwh += (whole * profile.idle_watts + work_j) / 3.6e6
        # contention next second: bandwidth drawn over what the GPUs in use have
        stretch = max(1.0, bandwidth_demand(ops, serving, n_dec, ctx, chunk, it) / max(serving.gpus, 1e-9)) \
            if it > 0 else 1.0
        # Decode progress.
        if n_dec:
            got = np.minimum(tokens_left[active], iters)
            tokens_left[active] -= got
            tbt_sum[active] += got * it
            tbt_tokens[active] += got
            tbt_hist_vals.append(it)
            tbt_hist_w.append(float(got.sum()))
            decoding[active[tokens_left[active] <= 1e-9]] = False
        # Prefill progress (FIFO), admitting while memory allows.
        budget = chunk * iters if n_dec else (backlog if chunk else 0.0)
        if n_dec == 0 and backlog > 0 and chunk > 0:
            # prompts alone: as fast as the allocation runs them
            per_tok = iteration_ms(ops, serving, 0, ctx, chunk) / chunk
            budget = 1000.0 / per_tok
        used = 0.0
        while queue_head < arrived and budget - used > 1e-9 and decoding.sum() < cap:
            j = queue_head
            take = min(prefill_left[j], budget - used)
            prefill_left[j] -= take
            used += take
            if prefill_left[j] <= 1e-9:
                done_at = sec + used / max(budget, 1e-9)
                ttft[j] = (max(done_at, tr.arrival[j]) - tr.arrival[j]) * 1000 + (it if it > 0 else 0.0)
                decoding[j] = True
                queue_head += 1
    served = ~np.isnan(ttft)
    mean_tbt = np.where(tbt_tokens > 0, tbt_sum / np.maximum(tbt_tokens, 1e-9), 0.0)
    ok = served & (ttft <= slo.ttft_ms) & (mean_tbt <= slo.tbt_ms) & (tokens_left <= 1e-9)
    res.slo_attainment = float(ok.mean())
    res.goodput_rps = float(ok.sum()) / max(float(tr.arrival[-1]), 1e-9)
    res.ttft_ok = float((served & (ttft <= slo.ttft_ms)).mean())
    res.tbt_ok = float((mean_tbt <= slo.tbt_ms).mean())
    res.ttft_p99_ms = float(np.percentile(ttft[served], 99)) if served.any() else float("inf")
    if tbt_hist_vals:
        vals, w = np.array(tbt_hist_vals), np.array(tbt_hist_w)
        order = np.argsort(vals)
        cum = np.cumsum(w[order]) / w.sum()
        res.tbt_p99_ms = float(vals[order][np.searchsorted(cum, 0.99)])
    res.wall_s = time.perf_counter() - t_wall
    return res


def dynamic_joules(profile: ModelProfile, ops: tuple, a: Allocation, n: float, ctx: float, chunk: float) -> float:
    """Energy above idle of one iteration's work (whole-GPU ms of compute and memory, ``opmodel``)."""
    total = 0.0
    for op, r, _s in zip(ops, a.replicas, a.shares, strict=True) if a.pipelined else [
            (op, a.replicas[0], a.shares[0]) for op in ops]:
        compute, memory = split_ms(op, n / r, ctx, chunk / r)
        total += r * (compute + 0.5 * memory)
    return (profile.gpu_watts - profile.idle_watts) * total / 1000


def _place(counter: GpuCounter, alloc: Allocation) -> Allocation:
    """Place the allocation's replicas (grow or shrink each operator); what does not fit is left out."""
    got = tuple(counter.set(name, r, s) for name, r, s in zip(alloc.names, alloc.replicas, alloc.shares, strict=True))
    return alloc.with_replicas(tuple(max(1, g) for g in got))


def run_all(tr: Trace, profile: ModelProfile, slo: SLO, baseline: str = "whole") -> dict[str, StrategyResult]:
    whole = (1.0, 2.0, 4.0, 8.0)
    base = whole if baseline == "whole" else OPERATOR_SHARES
    return {s: replay(tr, profile, slo, s, base) for s in ("static", "model", "operator")}


__all__ = ["Allocation", "StrategyResult", "Trace", "load_trace", "replay", "run_all"]
