"""Discrete-event replay of a diffusion pipeline (text encoder -> denoiser steps [-> ControlNet each
step] -> VAE decoder) under model-level and per-operator provisioning, on operator profiles
(``autoscale.opmodel``: two-axis GPU sharing) and the operator's own control loop
(``autoscale.policy.decide``).

- model level: a replica holds the whole pipeline (one per workflow, or one serving every workflow)
  and runs a request's stages one after another on its GPU share, batching requests step by step
  (continuous batching of denoising steps, the favourable case for the baseline);
- per operator: each stage its own deployment; requests hop between them (``HOP_MS`` plus the bytes
  handed over at ``LINK_GB_S``); the denoiser keeps a request's latents for all its steps.

Every replica batches up to ``batch`` requests of one resolution per call. Replicas are placed by
the packing engine as they start and released when they drain, so GPUs are counted the way a bill
counts them: whole GPUs with anything on them (``gpu_seconds``), beside the sum of the shares
(``gpu_seconds_fractional``). A replica starts after ``START_FIXED_S`` + weights / ``LOAD_GIB_S``.
Energy: idle power of every GPU in use plus the dynamic energy of each call's work (``opmodel.dynamic_joules``).
A request meets its SLO when its image is back within ``slo``; one still waiting for a replica after
its SLO has passed is dropped (a miss), so an overloaded strategy does not queue without bound.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from gensched.autoscale.opmodel import Cost, bandwidth_demand, call_cost, call_ms, dynamic_joules
from gensched.autoscale.policy import Limits, Observation, OperatorState, Settings, decide
from gensched.autoscale.profiles import ModelProfile, OperatorProfile
from gensched.packing import Allocation, ClusterState, GpuNode, GpuRequest, get_placer
from gensched.sim.autoscale_workloads import ImageRequests

STAGE_OPERATOR = {"te": "text-encoder", "unet": "denoiser", "cn": "controlnet", "vae": "vae-decoder"}
HOP_MS = 1.0  # one call between deployments (Ray Serve handle, same cluster)
LINK_GB_S = 10.0  # tensors handed between deployments (object store / network)
TEXT_TOKENS, TEXT_HIDDEN = 77, 768
CONTROL_VALUES_PER_TOKEN = 1640  # SD 1.5 ControlNet residuals per latent token (12 down + mid, fp16)
LORA_OVERHEAD = 0.05  # an unmerged LoRA adds this to a denoiser call holding LoRA requests (batched, Punica)
START_FIXED_S = 5.0
LOAD_GIB_S = 2.0
SLO_SCALE, SLO_FLOOR_S = 3.0, 1.0  # SLO = max(floor, scale x the request's latency alone on a whole GPU)
WINDOW_S = 30.0
MACRO_MS = 50.0  # longest run of back-to-back denoising steps simulated as one event
INITIAL_HEADROOM = 2.0  # replicas at t = 0: twice what Little's law gives for the first minute
GPUS_PER_NODE = 8


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    stages: tuple[str, ...]
    share: float
    batch: int  # requests per call and bound per replica
    workflows: tuple[int, ...] = (0, 1, 2)
    target: float | None = None  # requests in flight per replica the control loop aims at (default: batch)

    @property
    def target_ongoing(self) -> float:
        return float(self.target if self.target is not None else self.batch)


@dataclass(frozen=True)
class Strategy:
    name: str
    deployments: tuple[DeploymentSpec, ...]
    per_operator: bool
    loop_s: float = 10.0
    start_s: float | None = None  # replica start time for every deployment (ablation); None: by size
    fixed: tuple[int, ...] | None = None  # static replica counts (no control loop)
    lora_merged: bool = False  # pipelines dedicated to the LoRA workflow merge it into their weights
    stabilization_s: float = 60.0
    scale_up_step: int = 16
    hop_ms: float | None = None  # fixed cost of a call between deployments (default HOP_MS)
    drop_late: bool = True  # drop a request still waiting for a replica after its SLO (else serve it late)


@dataclass
class DeploymentStats:
    replicas_mean: float = 0.0
    replicas_peak: int = 0
    queue_wait_mean_ms: float = 0.0
    queue_wait_p95_ms: float = 0.0
    service_mean_ms: float = 0.0
    calls: int = 0
    batch_mean: float = 0.0


@dataclass
class Result:
    strategy: str
    gpu_seconds: float = 0.0
    gpu_seconds_fractional: float = 0.0
    energy_kwh: float = 0.0
    slo_attainment: float = 0.0
    goodput_rps: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    dropped: int = 0
    decisions: int = 0
    peak_gpus: int = 0
    horizon_s: float = 0.0
    wall_s: float = 0.0
    deployments: dict[str, DeploymentStats] = field(default_factory=dict)
    timeline: list[tuple[float, int, tuple[int, ...]]] = field(default_factory=list)  # (t, GPUs, replicas)


class _Replica:
    __slots__ = ("active", "alloc", "busy", "dep", "draining", "id", "local", "ready", "ready_at", "running",
                 "stretch")

    def __init__(self, rid: int, dep: int, ready_at: float) -> None:
        self.id, self.dep, self.ready_at = rid, dep, ready_at
        self.busy = False
        self.running = 0  # requests in the call in progress
        self.draining = False
        self.alloc: Allocation | None = None
        self.stretch = 1.0
        self.active: list[int] = []  # requests bound to it (denoiser / pipeline)
        self.ready: dict[int, deque[int]] = {}  # denoiser: class -> requests ready for a step
        self.local: dict[tuple[str, int], deque[int]] = {}  # pipeline: (stage, class) -> requests


def replica_memory_gib(ops: dict[str, OperatorProfile], d: DeploymentSpec, pixels: int) -> float:
    """Weights of the stages a replica hosts, activations of a full batch at ``pixels`` with guidance
    (twice the items), and a 1 GiB runtime."""
    weights = sum(ops[STAGE_OPERATOR[st]].weights_gib for st in d.stages)
    act = max(ops[STAGE_OPERATOR[st]].act_gib_per_kctx * (TEXT_TOKENS if st == "te" else (pixels // 8) ** 2) / 1000
              for st in d.stages)
    return weights + 2 * d.batch * act + 1.0


def slo_seconds(profile: ModelProfile, req: ImageRequests) -> np.ndarray:
    """SLO per request: ``SLO_SCALE`` x its latency alone on a whole GPU (batch 1), at least the floor."""
    ops = {o.name: o for o in profile.operators}
    out = np.empty(len(req))
    cache: dict[tuple[int, int, bool, int], float] = {}
    for i in range(len(req)):
        key = (int(req.steps[i]), int(req.pixels[i]), bool(req.guidance[i]), int(req.workflow[i]))
        if key not in cache:
            steps, px, cfg, wf = key
            items = 2 if cfg else 1
            ctx = float((px // req.latent_factor) ** 2)
            ms = call_ms(ops["text-encoder"], items, TEXT_TOKENS, 1.0) + call_ms(ops["vae-decoder"], 1, ctx, 1.0)
            step = call_ms(ops["denoiser"], items, ctx, 1.0)
            if wf == 2:
                step += call_ms(ops["controlnet"], items, ctx, 1.0)
            cache[key] = max(SLO_FLOOR_S, SLO_SCALE * (ms + steps * step) / 1000)
        out[i] = cache[key]
    return out


class _Sim:
    def __init__(self, profile: ModelProfile, req: ImageRequests, strat: Strategy, gpus: int | None,
                 packing: str, horizon_s: float | None) -> None:
        self.p, self.req, self.s = profile, req, strat
        self.ops: dict[str, OperatorProfile] = {o.name: o for o in profile.operators}
        self.n = len(req)
        self.items = np.where(req.guidance, 2, 1)
        self.lf = req.latent_factor
        self.hop = HOP_MS if strat.hop_ms is None else strat.hop_ms
        self.ctx = ((req.pixels // self.lf) ** 2).astype(float)
        self.cls = req.pixels.astype(int)
        self.slo = slo_seconds(profile, req)
        # plain lists for the hot paths (numpy scalars are slow to index one by one)
        self.t_l: list[float] = req.t.tolist()
        self.items_l: list[int] = self.items.tolist()
        self.cls_l: list[int] = self.cls.tolist()
        self.wf_l: list[int] = req.workflow.astype(int).tolist()
        self.slo_l: list[float] = self.slo.tolist()
        self.left = req.steps.astype(int).copy()
        self.done = np.full(self.n, np.nan)
        self.bound = np.full(self.n, -1, dtype=np.int64)  # replica holding the request (denoiser / pipeline)
        self.waiting_cn = np.zeros(self.n, dtype=bool)
        self.enq = np.zeros(self.n)  # when the request entered its current deployment
        self.deps = strat.deployments
        # stage -> deployment index (per operator); workflow -> deployment index (model level)
        self.stage_dep = {st: i for i, d in enumerate(self.deps) for st in d.stages} if strat.per_operator else {}
        self.cn_separate = bool(strat.per_operator and "cn" not in self.deps[self.stage_dep["unet"]].stages)
        if self.cn_separate and "cn" not in self.stage_dep:
            raise ValueError("per-operator strategy without a ControlNet deployment")
        self.wf_dep = {wf: i for i, d in enumerate(self.deps) for wf in d.workflows} if not strat.per_operator else {}
        self.queues: list[dict[tuple[str, int], deque[int]]] = [{} for _ in self.deps]
        self.replicas: list[list[_Replica]] = [[] for _ in self.deps]
        self.all: dict[int, _Replica] = {}
        self.next_id = 0
        self.events: list[tuple[float, int, int, tuple]] = []
        self.seq = 0
        nodes = math.ceil((gpus or 4096) / GPUS_PER_NODE)
        self.cluster = ClusterState([GpuNode(f"n{i:04d}", min(GPUS_PER_NODE, (gpus or 4096) - i * GPUS_PER_NODE),
                                             gpu_memory_gib=profile.gpu_memory_gib) for i in range(nodes)])
        self.placer = get_placer(packing)
        self.on_gpu: dict[tuple[str, int], list[_Replica]] = {}
        self.horizon = horizon_s if horizon_s is not None else float(req.t[-1]) + 120.0
        self.res = Result(strat.name)
        self.last_t = 0.0
        self.whole = 0
        self.frac = 0.0
        self.states: dict[str, OperatorState] = {}
        self.arrived_items = [deque() for _ in self.deps]  # (time, requests) for the observed rate
        self.waits: list[list[float]] = [[] for _ in self.deps]
        self.service: list[list[float]] = [[] for _ in self.deps]
        self.batches: list[list[int]] = [[] for _ in self.deps]
        self.rep_time = [0.0 for _ in self.deps]
        self.energy_j = 0.0
        self.design = [self._design_cost(d) for d in self.deps]
        self.remaining = self.n

    # -- bookkeeping -----------------------------------------------------------------------------
    def push(self, t: float, kind: int, payload: tuple) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, payload))

    def account(self, now: float) -> None:
        dt = now - self.last_t
        if dt > 0:
            self.res.gpu_seconds += self.whole * dt
            self.res.gpu_seconds_fractional += self.frac * dt
            self.energy_j += self.whole * self.p.idle_watts * dt
            for i, reps in enumerate(self.replicas):
                self.rep_time[i] += len(reps) * dt
            self.last_t = now

    def _weights(self, d: DeploymentSpec) -> float:
        return sum(self.ops[STAGE_OPERATOR[st]].weights_gib for st in d.stages)

    def _memory(self, d: DeploymentSpec) -> float:
        return replica_memory_gib(self.ops, d, int(self.req.pixels.max()) if len(self.req) else 512)

    def _design_cost(self, d: DeploymentSpec) -> Cost:
        main = "unet" if "unet" in d.stages else d.stages[0]
        op = self.ops[STAGE_OPERATOR[main]]
        return call_cost(op, d.batch, TEXT_TOKENS if main == "te" else 4096.0)

    def start_seconds(self, d: DeploymentSpec) -> float:
        if self.s.start_s is not None:
            return self.s.start_s
        return START_FIXED_S + self._weights(d) / LOAD_GIB_S

    def add_replica(self, di: int, now: float, ready_at: float) -> bool:
        d = self.deps[di]
        rid = self.next_id
        self.next_id += 1
        share = d.share
        req = GpuRequest(f"r{rid}", whole_gpus=int(share) if share >= 1 else 0,
                         gpu_milli=1000 if share >= 1 else max(1, round(share * 1000)),
                         gpu_memory_gib=self._memory(d) / (max(share, 1.0) if share >= 1 else 1.0))
        out = self.placer.place(self.cluster, req)
        if not isinstance(out, Allocation):
            return False
        self.account(now)
        self.cluster.reserve(out)
        r = _Replica(rid, di, ready_at)
        r.alloc = out
        self.replicas[di].append(r)
        self.all[rid] = r
        for g in out.gpu_indices:
            self.on_gpu.setdefault((out.node, g), []).append(r)
        self._recount(out)
        if ready_at > now:
            self.push(ready_at, 2, (rid,))
        return True

    def _recount(self, alloc: Allocation) -> None:
        self.whole = int(((self.cluster.gpu_free < 1000) & self.cluster.gpu_exists).sum())
        self.frac = sum(self.deps[r.dep].share for r in self.all.values())
        self.res.peak_gpus = max(self.res.peak_gpus, self.whole)
        for g in alloc.gpu_indices:  # bandwidth contention on the GPUs that changed
            reps = self.on_gpu.get((alloc.node, g), [])
            demand = sum(bandwidth_demand(self.design[r.dep], self.deps[r.dep].share) for r in reps)
            for r in reps:
                r.stretch = max(1.0, demand)

    def remove_replica(self, r: _Replica, now: float) -> None:
        self.account(now)
        assert r.alloc is not None
        self.cluster.release(r.alloc.key)
        for g in r.alloc.gpu_indices:
            self.on_gpu[(r.alloc.node, g)].remove(r)
        self.replicas[r.dep].remove(r)
        del self.all[r.id]
        self._recount(r.alloc)

    # -- request flow --------------------------------------------------------------------------------
    def enqueue(self, di: int, stage: str, i: int, now: float) -> None:
        """Request ``i`` waits at deployment ``di`` for ``stage`` (admission for denoiser / pipeline)."""
        self.enq[i] = now
        key = (stage, self.cls_l[i] if stage != "te" else 0)
        self.queues[di].setdefault(key, deque()).append(i)
        self.arrived_items[di].append(now)
        self.wake(di, now)

    def wake(self, di: int, now: float) -> None:
        for r in self.replicas[di]:
            if not r.busy and not r.draining and r.ready_at <= now:
                self.start_call(r, now)
                if not any(self.queues[di].values()):
                    return

    def hop_ms(self, i: int, what: str) -> float:
        px = int(self.req.pixels[i])
        tokens = (px // self.lf) ** 2
        items = int(self.items[i])
        nbytes = {"emb": items * TEXT_TOKENS * TEXT_HIDDEN * 2, "lat": 4 * tokens * 2,
                  "cn": items * tokens * CONTROL_VALUES_PER_TOKEN * 2, "img": 3 * px * px}[what]
        return self.hop + nbytes / (LINK_GB_S * 1e9) * 1000

    def finish(self, i: int, t: float) -> None:
        self.done[i] = t
        self.remaining -= 1

    def _admit(self, r: _Replica, now: float) -> None:
        """Bind waiting requests to a denoiser / pipeline replica while it has room."""
        d = self.deps[r.dep]
        stage = "unet" if self.s.per_operator else "admit"
        if r.draining or len(r.active) >= d.batch:
            return
        q = self.queues[r.dep]
        keys = [k for k in q if k[0] == stage and q[k]]
        while keys and len(r.active) < d.batch:
            k = min(keys, key=lambda k: self.t_l[q[k][0]])
            i = q[k].popleft()
            if not q[k]:
                keys.remove(k)
            if self.s.drop_late and now - self.t_l[i] > self.slo_l[i]:
                self.res.dropped += 1
                self.remaining -= 1
                continue
            self.waits[r.dep].append(now - self.enq[i])
            r.active.append(i)
            self.bound[i] = r.id
            if self.s.per_operator:
                self._ready_for_step(r, i, now)
            else:
                r.local.setdefault(("te", 0), deque()).append(i)

    def _ready_for_step(self, r: _Replica, i: int, now: float) -> None:
        if self.cn_separate and self.wf_l[i] == 2:
            self.waiting_cn[i] = True
            self.push(now + self.hop_ms(i, "cn") / 1000, 1, (self.stage_dep["cn"], "cn", i))
        else:
            r.ready.setdefault(self.cls_l[i], deque()).append(i)

    def start_call(self, r: _Replica, now: float) -> None:
        d = self.deps[r.dep]
        if "unet" in d.stages:
            self._admit(r, now)
        best: tuple[float, str, int, deque[int]] | None = None
        for st in d.stages:
            if st == "unet":
                for c, dq in r.ready.items():
                    if dq and (best is None or self.t_l[dq[0]] < best[0]):
                        best = (self.t_l[dq[0]], st, c, dq)
                continue
            if st == "cn" and not self.cn_separate:
                continue  # co-located ControlNet runs inside the denoiser's call
            if self.s.per_operator and r.draining:
                continue  # a draining stateless replica takes no new work
            pool = r.local if not self.s.per_operator else self.queues[r.dep]
            for (s2, c), dq in pool.items():
                if s2 == st and dq and (best is None or self.t_l[dq[0]] < best[0]):
                    best = (self.t_l[dq[0]], st, c, dq)
        if best is None:
            if r.draining and not r.active:
                self.remove_replica(r, now)
            return
        _, st, c, dq = best
        batch: list[int] = []
        while dq and len(batch) < d.batch:
            i = dq.popleft()
            if st in ("te", "vae", "cn") and self.s.per_operator:
                if st == "te" and self.s.drop_late and now - self.t_l[i] > self.slo_l[i]:
                    self.res.dropped += 1
                    self.remaining -= 1
                    continue
                self.waits[r.dep].append(now - self.enq[i])
            batch.append(i)
        if not batch:
            self.start_call(r, now)
            return
        items = sum(self.items_l[i] for i in batch)
        ctx = TEXT_TOKENS if st == "te" else float(c // self.lf) ** 2
        op = self.ops[STAGE_OPERATOR[st]]
        share, stretch = d.share, r.stretch
        cost = call_cost(op, items, ctx)
        ms = call_ms(op, items, ctx, share, stretch)
        energy = dynamic_joules(self.p.gpu_watts, self.p.idle_watts, cost)
        if st == "unet":
            control = [i for i in batch if self.wf_l[i] == 2]
            if control and not self.cn_separate:
                cn_items = sum(self.items_l[i] for i in control)
                cn_cost = call_cost(self.ops["controlnet"], cn_items, ctx)
                cn_ms = call_ms(self.ops["controlnet"], cn_items, ctx, share, stretch)
                ms += cn_ms
                energy += dynamic_joules(self.p.gpu_watts, self.p.idle_watts, cn_cost)
            if not (self.s.lora_merged and d.workflows == (1,)) and any(self.wf_l[i] == 1 for i in batch):
                ms *= 1 + LORA_OVERHEAD
        steps = self._steps(r, st, batch, ms)
        self.energy_j += steps * energy
        r.busy = True
        r.running = len(batch)
        self.service[r.dep].extend([ms] * steps)
        self.batches[r.dep].extend([len(batch)] * steps)
        self.push(now + steps * ms / 1000, 0, (r.id, st, tuple(batch), steps))

    def _steps(self, r: _Replica, st: str, batch: list[int], ms: float) -> int:
        """Denoising steps to run back to back in one event: while nothing else waits for this replica the
        same batch would run again anyway; at most ``MACRO_MS`` (admission waits for the end)."""
        if st != "unet" or ms >= MACRO_MS:
            return 1
        if self.cn_separate and any(self.wf_l[i] == 2 for i in batch):
            return 1  # each step waits for the ControlNet deployment
        if any(dq for dq in r.ready.values()) or any(dq for dq in r.local.values()):
            return 1
        d = self.deps[r.dep]
        if len(r.active) < d.batch and any(dq for k, dq in self.queues[r.dep].items()):
            return 1
        return max(1, min(min(int(self.left[i]) for i in batch), int(MACRO_MS / ms)))

    def call_done(self, rid: int, st: str, batch: tuple[int, ...], steps: int, now: float) -> None:
        r = self.all[rid]
        r.busy = False
        r.running = 0
        per_op = self.s.per_operator
        for i in batch:
            if st == "te":
                if per_op:
                    self.push(now + self.hop_ms(i, "emb") / 1000, 1, (self.stage_dep["unet"], "unet", i))
                else:
                    r.ready.setdefault(self.cls_l[i], deque()).append(i)
            elif st == "unet":
                self.left[i] -= steps
                if self.left[i] > 0:
                    if per_op:
                        self._ready_for_step(r, i, now)
                    else:
                        r.ready.setdefault(self.cls_l[i], deque()).append(i)
                    continue
                if per_op:
                    r.active.remove(i)
                    self.push(now + self.hop_ms(i, "lat") / 1000, 1, (self.stage_dep["vae"], "vae", i))
                else:
                    r.local.setdefault(("vae", self.cls_l[i]), deque()).append(i)
            elif st == "cn":  # per operator, separate ControlNet: back to the request's denoiser replica
                self.push(now + self.hop_ms(i, "cn") / 1000, 3, (i,))
            else:  # vae: the image goes back to the caller
                if per_op:
                    self.finish(i, now + self.hop_ms(i, "img") / 1000)
                else:
                    r.active.remove(i)
                    self.finish(i, now)
        self.start_call(r, now)

    def control_back(self, i: int, now: float) -> None:
        self.waiting_cn[i] = False
        r = self.all.get(int(self.bound[i]))
        if r is None:
            return
        r.ready.setdefault(self.cls_l[i], deque()).append(i)
        if not r.busy:
            self.start_call(r, now)

    # -- the control loop ------------------------------------------------------------------------------
    def in_flight(self, di: int) -> float:
        """Requests waiting at the deployment plus those its replicas hold (bound, or in a call)."""
        q = sum(len(v) for v in self.queues[di].values())
        if "unet" in self.deps[di].stages:
            return float(q + sum(len(r.active) for r in self.replicas[di]))
        return float(q + sum(r.running for r in self.replicas[di]))

    def tick(self, now: float) -> None:
        current = {d.name: sum(1 for r in self.replicas[i] if not r.draining) for i, d in enumerate(self.deps)}
        observed, limits = {}, {}
        for i, d in enumerate(self.deps):
            arr = self.arrived_items[i]
            while arr and arr[0] < now - WINDOW_S:
                arr.popleft()
            observed[d.name] = Observation(len(arr) / WINDOW_S, self.in_flight(i))
            limits[d.name] = Limits(1, 100_000, d.target_ongoing)
        settings = Settings(cooldown_s=self.s.loop_s, stabilization_s=self.s.stabilization_s,
                            scale_up_step=self.s.scale_up_step)
        changes = decide(now, current, observed, limits, self.states, settings)
        for c in changes:
            di = next(i for i, d in enumerate(self.deps) if d.name == c.name)
            if c.new > c.old:
                for _ in range(c.new - c.old):
                    if not self.add_replica(di, now, now + self.start_seconds(self.deps[di])):
                        break
            else:
                live = sorted((r for r in self.replicas[di] if not r.draining),
                              key=lambda r: (r.ready_at <= now, len(r.active) + r.busy))
                for r in live[: c.old - c.new]:
                    r.draining = True
                    if not r.busy and not r.active:
                        self.remove_replica(r, now)
        if changes:
            self.res.decisions += 1
        self.res.timeline.append((now, self.whole, tuple(len(v) for v in self.replicas)))

    # -- run -----------------------------------------------------------------------------------------------
    def initial(self) -> list[int]:
        """Replicas at t = 0: the static counts, else Little's law on the first minute (same rule for all)."""
        if self.s.fixed is not None:
            return list(self.s.fixed)
        first = self.req.t < min(60.0, float(self.t_l[-1]) + 1e-9)
        rate = max(1, int(first.sum())) / 60.0
        out = []
        for d in self.deps:
            mean_s = 0.0
            for i in np.flatnonzero(first)[:2000]:
                if not self.s.per_operator and int(self.wf_l[i]) not in d.workflows:
                    continue
                for st in d.stages:
                    if st == "cn" and self.wf_l[i] != 2:
                        continue
                    op = self.ops[STAGE_OPERATOR[st]]
                    ctx = TEXT_TOKENS if st == "te" else self.ctx[i]
                    reps = self.left[i] if st in ("unet", "cn") else 1
                    mean_s += reps * call_ms(op, d.batch * int(self.items[i]), ctx, d.share) / 1000
            mean_s /= max(1, int(first.sum()))
            out.append(max(1, math.ceil(INITIAL_HEADROOM * rate * mean_s / d.target_ongoing)))
        return out

    def run(self) -> Result:
        t_wall = time.perf_counter()
        for di, k in enumerate(self.initial()):
            for _ in range(k):
                self.add_replica(di, 0.0, 0.0)
        for i in range(self.n):
            self.push(float(self.t_l[i]), 4, (i,))
        if self.s.fixed is None:
            t = self.s.loop_s
            while t < self.horizon:
                self.push(t, 5, ())
                t += self.s.loop_s
        now = 0.0
        while self.events and self.remaining > 0:
            now, _, kind, payload = heapq.heappop(self.events)
            if now > self.horizon:
                now = self.horizon
                break
            if kind == 0:
                self.call_done(payload[0], payload[1], payload[2], payload[3], now)
            elif kind == 1:
                self.enqueue(payload[0], payload[1], payload[2], now)
            elif kind == 2:
                r = self.all.get(payload[0])
                if r is not None and not r.busy:
                    self.start_call(r, now)
            elif kind == 3:
                self.control_back(payload[0], now)
            elif kind == 4:
                i = payload[0]
                if self.s.per_operator:
                    self.push(now + self.hop / 1000, 1, (self.stage_dep["te"], "te", i))
                else:
                    self.enqueue(self.wf_dep[int(self.wf_l[i])], "admit", i, now)
            else:
                self.tick(now)
        end = max(now, float(self.t_l[-1]))
        self.account(end)
        return self.summarise(end, t_wall)

    def summarise(self, end: float, t_wall: float) -> Result:
        res = self.res
        lat = self.done - self.req.t
        ok = ~np.isnan(lat) & (lat <= self.slo)
        res.slo_attainment = float(ok.mean()) if self.n else 0.0
        span = max(float(self.t_l[-1]), 1e-9)
        res.goodput_rps = float(ok.sum()) / span
        served = lat[~np.isnan(lat)]
        if len(served):
            res.latency_p50_ms = float(np.percentile(served, 50) * 1000)
            res.latency_p99_ms = float(np.percentile(served, 99) * 1000)
        res.energy_kwh = self.energy_j / 3.6e6
        res.horizon_s = end
        for i, d in enumerate(self.deps):
            w, sv = self.waits[i], self.service[i]
            res.deployments[d.name] = DeploymentStats(
                replicas_mean=self.rep_time[i] / max(end, 1e-9),
                replicas_peak=max((x[2][i] for x in res.timeline), default=len(self.replicas[i])),
                queue_wait_mean_ms=float(np.mean(w) * 1000) if w else 0.0,
                queue_wait_p95_ms=float(np.percentile(w, 95) * 1000) if w else 0.0,
                service_mean_ms=float(np.mean(sv)) if sv else 0.0, calls=len(sv),
                batch_mean=float(np.mean(self.batches[i])) if self.batches[i] else 0.0)
        res.wall_s = time.perf_counter() - t_wall
        return res


def replay(profile: ModelProfile, req: ImageRequests, strategy: Strategy, gpus: int | None = None,
           packing: str = "GpuPacking", horizon_s: float | None = None) -> Result:
    """Replay ``req`` under ``strategy`` (``gpus``: a cluster of that many GPUs; default unbounded)."""
    if len(req) == 0:
        raise ValueError("no requests to replay")
    return _Sim(profile, req, strategy, gpus, packing, horizon_s).run()
