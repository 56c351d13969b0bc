"""Prefill/decode disaggregation (Splitwise, DistServe) in the same fluid replay as ``autoscale_sim``:
two pools of whole-model replicas, each sized and autoscaled on its own load.

- Prefill pool (``P`` replicas of share ``s_p``): prompts queue FIFO and are computed in chunks of
  ``PREFILL_CHUNK`` tokens, as fast as the pool runs them; a prompt's KV cache then moves to the decode
  pool (``kv bytes / KV_LINK_GB_S``).
- Decode pool (``D`` replicas of share ``s_d``): continuous batching of the decoding sequences with no
  prompt chunks in its iterations, so its TBT is not disturbed by prompts; admission is bounded by its
  KV memory.

TTFT = queueing + prefill + KV transfer + one decode iteration. Sizing (``size_pools``): the decode pool
is the fewest replicas whose iteration meets ``HEADROOM`` x TBT at ``N = rate x output x TBT`` sequences
within memory; the prefill pool the fewest whose utilisation stays below ``PREFILL_UTIL`` with a prompt
served within ``HEADROOM`` x TTFT. Replica shares are tuned for the p95 load like the other strategies.
Control loop, start-up, packing, contention and power: as ``autoscale_sim``.
"""

from __future__ import annotations

import math
import time

import numpy as np

from gensched.autoscale.perf import Allocation, bandwidth_demand, iteration_ms, max_sequences
from gensched.autoscale.profiles import ModelProfile, ProfileError
from gensched.autoscale.sizing import HEADROOM, SLO, Load
from gensched.sim.autoscale_packing import GpuCounter
from gensched.sim.autoscale_sim import (
    FORECAST_HEADROOM,
    INTERVAL_S,
    STABLE_S,
    StrategyResult,
    Trace,
    _load_between,
    dynamic_joules,
    forecast,
    p95_load,
)

PREFILL_CHUNK = 4096  # prompt tokens per prefill iteration
PREFILL_UTIL = 0.7  # the prefill pool is sized to stay below this utilisation
KV_LINK_GB_S = 50.0  # prefill -> decode KV transfer (RDMA between nodes, as Splitwise uses)
SHARES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
MAX_REPLICAS = 512


def _alloc(r: int, s: float) -> Allocation:
    return Allocation(("model",), (max(1, r),), (s,), False)


def prefill_ms_per_token(profile: ModelProfile, share: float, ctx: float) -> float:
    ops = profile.operators
    return iteration_ms(ops, _alloc(1, share), 0, ctx, PREFILL_CHUNK) / PREFILL_CHUNK


def transfer_ms(profile: ModelProfile, tokens: float) -> float:
    kv = sum(o.kv_gib_per_token for o in profile.operators) * 1024**3
    return tokens * kv / (KV_LINK_GB_S * 1e9) * 1000


def _decode_replicas(profile: ModelProfile, share: float, load: Load, slo: SLO) -> int:
    ops, gib = profile.operators, profile.gpu_memory_gib
    if sum(o.weights_gib for o in ops) >= share * gib:
        raise ProfileError("a decode replica's share cannot hold the weights")
    for d in range(1, MAX_REPLICAS + 1):
        a = _alloc(d, share)
        tau = iteration_ms(ops, a, 1, load.ctx, 0)
        for _ in range(30):
            n = load.rate * load.output * tau / 1000
            tau = 0.5 * (tau + iteration_ms(ops, a, n, load.ctx, 0))
        n = load.rate * load.output * tau / 1000
        if tau <= HEADROOM * slo.tbt_ms and n <= max_sequences(ops, a, load.ctx, gib):
            return d
    raise ProfileError(f"no decode pool within {MAX_REPLICAS} replicas meets TBT {slo.tbt_ms:g} ms")


def _prefill_replicas(profile: ModelProfile, share: float, load: Load, slo: SLO, decode_tau: float) -> int:
    if sum(o.weights_gib for o in profile.operators) >= share * profile.gpu_memory_gib:
        raise ProfileError("a prefill replica's share cannot hold the weights")
    per_tok = prefill_ms_per_token(profile, share, load.prompt)
    budget = HEADROOM * slo.ttft_ms - transfer_ms(profile, load.prompt) - decode_tau
    if load.prompt * per_tok > budget:
        raise ProfileError(f"one prompt alone takes {load.prompt * per_tok:.0f} ms to prefill: above the TTFT budget")
    work = load.rate * load.prompt * per_tok / 1000  # replicas' worth of busy time
    return max(1, math.ceil(work / PREFILL_UTIL - 1e-9))


def size_pools(profile: ModelProfile, shares: tuple[float, float], load: Load, slo: SLO) -> tuple[int, int]:
    d = _decode_replicas(profile, shares[1], load, slo)
    tau = iteration_ms(profile.operators, _alloc(d, shares[1]), load.rate * load.output * HEADROOM * slo.tbt_ms
                       / 1000, load.ctx, 0)
    return _prefill_replicas(profile, shares[0], load, slo, tau), d


def choose_pool_shares(profile: ModelProfile, load: Load, slo: SLO, choices: tuple[float, ...] = SHARES
                       ) -> tuple[float, float]:
    best_d = best_p = None
    for s in choices:
        try:
            d = _decode_replicas(profile, s, load, slo)
        except ProfileError:
            continue
        if best_d is None or d * s < best_d[1] - 1e-9:
            best_d = (s, d * s)
    if best_d is None:
        raise ProfileError("no decode replica size meets the SLOs at the reference load")
    tau = iteration_ms(profile.operators, _alloc(1, best_d[0]), 1, load.ctx, 0)
    for s in choices:
        try:
            p = _prefill_replicas(profile, s, load, slo, tau)
        except ProfileError:
            continue
        if best_p is None or p * s < best_p[1] - 1e-9:
            best_p = (s, p * s)
    if best_p is None:
        raise ProfileError("no prefill replica size meets the TTFT at the reference load")
    return best_p[0], best_d[0]


def replay_pd(tr: Trace, profile: ModelProfile, slo: SLO, loop_s: float | None = None, start_s: float | None = None,
              gpus: int | None = None, packing: str = "GpuPacking",
              shares: tuple[float, float] | None = None, headroom: float = FORECAST_HEADROOM) -> StrategyResult:
    t_wall = time.perf_counter()
    ops = profile.operators
    gib = profile.gpu_memory_gib
    loop = int(loop_s if loop_s is not None else INTERVAL_S)
    horizon = math.ceil(tr.arrival[-1]) + 1
    ref = _load_between(tr, 0, horizon)
    ref95 = p95_load(tr, headroom)
    sh = shares or choose_pool_shares(profile, ref95, slo)
    want = list(size_pools(profile, sh, ref95, slo))
    counter = GpuCounter(gib, packing, gpus)
    names = ("prefill", "decode")
    reps = [max(1, counter.set(n, w, s)) for n, w, s in zip(names, want, sh, strict=True)]
    res = StrategyResult("prefill_decode", shares=list(sh))
    start = start_s if start_s is not None else profile.start_seconds(profile.whole())
    ready = [np.zeros(r) for r in reps]
    low_since: list[float | None] = [None, None]
    n = len(tr.arrival)
    ttft = np.full(n, np.nan)
    prefill_left = tr.prompt.astype(float).copy()
    tokens_left = tr.output.astype(float).copy()
    tbt_sum, tbt_tokens = np.zeros(n), np.zeros(n)
    tbt_vals: list[float] = []
    tbt_w: list[float] = []
    queue_head = 0
    handoff: list[tuple[float, int]] = []  # (time the KV arrives at the decode pool, request)
    decoding = np.zeros(n, dtype=bool)
    waiting_decode: list[int] = []  # prefilled, KV arrived, waiting for decode memory
    stretch = 1.0
    for sec in range(horizon + 600):
        arrived = int(np.searchsorted(tr.arrival, sec + 1))
        if arrived >= n and queue_head >= n and not decoding.any() and not handoff and not waiting_decode:
            break
        if sec % loop == 0 and sec > 0:
            fc = forecast(tr, sec, headroom, float(prefill_left[queue_head:arrived].sum()))
            try:
                target = list(size_pools(profile, sh, fc, slo))
            except ProfileError:
                target = [r + 1 for r in reps]
            new = list(reps)
            for i in range(2):
                if target[i] > reps[i]:
                    new[i] = target[i]
                    low_since[i] = None
                elif target[i] < reps[i]:
                    low_since[i] = sec if low_since[i] is None else low_since[i]
                    if sec - low_since[i] >= STABLE_S:
                        new[i], low_since[i] = target[i], None
                else:
                    low_since[i] = None
            if new != reps:
                res.decisions += 1
                for i in range(2):
                    got = max(1, counter.set(names[i], new[i], sh[i]))
                    if got > reps[i]:
                        ready[i] = np.concatenate([ready[i], np.full(got - reps[i], sec + start)])
                    else:
                        ready[i] = np.sort(ready[i])[:got]
                    reps[i] = got
        live = [max(1, int((rd <= sec).sum())) for rd in ready]
        whole = counter.whole
        res.gpu_seconds += whole
        res.gpu_seconds_fractional += sum(r * s for r, s in zip(reps, sh, strict=True))
        res.peak_gpus = max(res.peak_gpus, whole)
        if sec % INTERVAL_S == 0:
            res.replicas_timeline.append(list(reps))
        # Prefill pool: FIFO, as fast as its live replicas compute.
        backlog = float(prefill_left[queue_head:arrived].sum()) if arrived > queue_head else 0.0
        per_tok = iteration_ms(ops, _alloc(1, sh[0]), 0, ref.prompt, PREFILL_CHUNK, stretch) / PREFILL_CHUNK
        budget = live[0] * 1000.0 / per_tok if backlog > 0 else 0.0
        used = 0.0
        while queue_head < arrived and budget - used > 1e-9:
            j = queue_head
            take = min(prefill_left[j], budget - used)
            prefill_left[j] -= take
            used += take
            if prefill_left[j] <= 1e-9:
                # the pool's FIFO, but one prompt runs on one replica: never faster than alone
                done = max(sec + used / budget, tr.arrival[j] + tr.prompt[j] * per_tok / 1000)
                handoff.append((done + transfer_ms(profile, tr.prompt[j]) / 1000, j))
                ttft[j] = (done - tr.arrival[j]) * 1000 + transfer_ms(profile, tr.prompt[j])
                queue_head += 1
        # KV arrives at the decode pool; admit while its memory holds the sequences.
        arrivals_now = [j for t, j in handoff if t < sec + 1]
        handoff = [(t, j) for t, j in handoff if t >= sec + 1]
        waiting_decode.extend(arrivals_now)
        active = np.flatnonzero(decoding)
        ctx = float((tr.prompt[active] + (tr.output[active] - tokens_left[active])).mean()) if len(active) else \
            float(ref.ctx)
        dec_alloc = _alloc(live[1], sh[1])
        cap = max_sequences(ops, dec_alloc, ctx, gib)
        while waiting_decode and len(active) + 1 <= cap:
            j = waiting_decode.pop(0)
            decoding[j] = True
            active = np.append(active, j)
        it = iteration_ms(ops, dec_alloc, len(active), ctx, 0, stretch) if len(active) else 0.0
        for j in arrivals_now:
            if decoding[j]:
                ttft[j] += it  # the first token comes out of the first decode iteration
        if len(active):
            iters = 1000.0 / it
            got = np.minimum(tokens_left[active], iters)
            tokens_left[active] -= got
            tbt_sum[active] += got * it
            tbt_tokens[active] += got
            tbt_vals.append(it)
            tbt_w.append(float(got.sum()))
            decoding[active[tokens_left[active] <= 1e-9]] = False
        prefill_j = dynamic_joules(profile, ops, _alloc(1, sh[0]), 0, ref.prompt, PREFILL_CHUNK) * used / PREFILL_CHUNK
        decode_j = dynamic_joules(profile, ops, dec_alloc, len(active), ctx, 0) * (1000.0 / it) if it > 0 else 0.0
        dyn = prefill_j + decode_j
        res.energy_kwh += (whole * profile.idle_watts + dyn) / 3.6e6
        bw = bandwidth_demand(ops, dec_alloc, len(active), ctx, 0, it) if it > 0 else 0.0
        stretch = max(1.0, bw / max(dec_alloc.gpus, 1e-9))
    served = ~np.isnan(ttft) & (tbt_tokens > 0)
    mean_tbt = np.where(tbt_tokens > 0, tbt_sum / np.maximum(tbt_tokens, 1e-9), 0.0)
    ok = served & (ttft <= slo.ttft_ms) & (mean_tbt <= slo.tbt_ms) & (tokens_left <= 1e-9)
    res.slo_attainment = float(ok.mean())
    res.goodput_rps = float(ok.sum()) / max(float(tr.arrival[-1]), 1e-9)
    res.ttft_ok = float((served & (ttft <= slo.ttft_ms)).mean())
    res.tbt_ok = float((mean_tbt <= slo.tbt_ms).mean())
    res.ttft_p99_ms = float(np.percentile(ttft[served], 99)) if served.any() else float("inf")
    if tbt_vals:
        vals, w = np.array(tbt_vals), np.array(tbt_w)
        order = np.argsort(vals)
        cum = np.cumsum(w[order]) / w.sum()
        res.tbt_p99_ms = float(vals[order][np.searchsorted(cum, 0.99)])
    res.wall_s = time.perf_counter() - t_wall
    return res
