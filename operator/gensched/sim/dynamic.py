"""Dynamic packing: a queue with arrivals and departures, replayed through the scheduling cycle.

``gensched simulate packing --mode dynamic`` feeds the same ``gensched.sched.schedule`` the operator
runs with a Poisson resampling of a trace's tasks, and measures what a queue adds to packing:
queueing delay per task class, starvation of large jobs, allocation over time, preemption losses.

Protocol (docs/packing.md, "Dynamic packing"; results in docs/benchmarks.md):
- Tasks: the pod list's rows, each with its duration ``deletion_time - creation_time`` (seconds).
  Rows without either time or with a negative duration are dropped; a duration of 0 s is clamped to
  1 s (a task runs at least one tick). Both are counted in the output (``trace``).
- Arrivals: Poisson, task types drawn uniformly with replacement, at the rate that offers ``load`` x
  the cluster's GPUs: rate = load x GPUs / E[GPUs x duration] (mean over the tasks, so a task's GPU
  demand and duration are not assumed independent). Times are whole seconds (the trace's resolution).
- Cycles: one at the first multiple of ``cycle_s`` at or after an arrival or departure, with every
  event up to it applied (``cycle_s`` 1: one per second that has events).
- Warm start: at t = 0 the cluster receives the stationary population of an unlimited cluster at that
  load (Poisson(rate x E[duration]) tasks, types drawn in proportion to their duration, each with a
  uniform share of its duration already done), placed oldest first by the policy's own placer (one
  that fits nowhere is dropped and counted: the queue starts empty). Long tasks
  dominate the trace's GPU-time (the 86 tasks over a day hold 91% of it), so starting empty would
  need weeks of warm-up. Then ``warmup_h`` hours are discarded; everything reported is measured over
  [warmup, horizon): jobs arriving in it, allocation integrated over it.
- Identical arrivals: the arrival stream, the warm-start population and the estimate noise depend
  only on the seed (and the load for rates and the population size), never on the policy; every
  load shares the seed's sequence of task types.
- Evictions (preemption or a defragmentation move) take effect at once: the victim's GPUs come back,
  it re-queues keeping its arrival time (its age), it loses the work since its last checkpoint (one
  every ``checkpoint_min`` minutes of run time since it last started), and its remaining work runs
  when it is placed again. After a cycle that evicted, a follow-up cycle runs in the same second.
- Queueing delay of a job: all the time it spent waiting (before its first start and after every
  eviction). A job still waiting at the horizon counts with its wait so far (a lower bound; counted
  in ``still_waiting``).
"""

from __future__ import annotations

import csv
import heapq
import json
import math
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

import gensched.packing.gensched_policy  # noqa: F401  (loaded before worker processes fork: one code version per run)
from gensched.packing import Allocation, ClusterState, GpuNode, GpuRequest, Placer, get_placer
from gensched.packing.fgd import TaskMix
from gensched.sched import Backfill, RunningJob, Settings, Snapshot, WaitingJob, schedule
from gensched.sim.alibaba import LoadReport, load_nodes, load_pods

FIRST_SEED = 42
CLASSES = ("share", "1gpu", "2-4gpu", "8gpu", "cpu")
GPU_CLASSES = CLASSES[:4]
FOLLOW_UPS = 4  # cycles run again in the same second after evictions (each is bounded by its budgets)


@dataclass(frozen=True)
class DynamicPolicy:
    name: str
    strategy: str  # packing policy (gensched.packing)
    settings: Settings


def _policies(checkpoint_s: float, reservations: int = 1) -> dict[str, DynamicPolicy]:
    fifo = dict(priority=False, preemption=False, defragmentation=False, checkpoint_s=checkpoint_s)
    return {
        "gensched": DynamicPolicy("gensched", "Gensched", Settings(backfill=Backfill.EASY, priority=True,
                                                                   preemption=True, defragmentation=True,
                                                                   checkpoint_s=checkpoint_s,
                                                                   reservations=reservations)),
        "fgd-fifo": DynamicPolicy("fgd-fifo", "FGD", Settings(backfill=Backfill.NONE, **fifo)),
        "bestfit-fifo": DynamicPolicy("bestfit-fifo", "BestFit", Settings(backfill=Backfill.NONE, **fifo)),
        "fgd-backfill": DynamicPolicy("fgd-backfill", "FGD", Settings(backfill=Backfill.UNRESTRICTED, **fifo)),
    }


POLICY_NAMES = tuple(_policies(1800.0))


@dataclass(frozen=True)
class DynamicConfig:
    load: float = 1.0
    warmup_h: float = 1.0
    horizon_h: float = 5.0
    checkpoint_min: float = 30.0
    priorities: str = "equal"  # equal: every task priority 0; qos: LS, Burstable, Guaranteed 1 and BE 0
    estimates: str = "exact"  # exact: the trace duration; noisy: x lognormal(0, noise_sigma); none: unknown
    noise_sigma: float = 1.0
    cycle_s: float = 10.0  # a cycle runs at the first multiple of this at or after an arrival or departure
    reservations: int = 1  # gensched: blocked jobs that get a node held for them (1: EASY backfill)

    def __post_init__(self) -> None:
        if not 0 < self.load <= 10:
            raise ValueError(f"--load {self.load:g}: must be above 0 and at most 10 (x cluster GPU capacity)")
        if not 0 <= self.warmup_h < self.horizon_h:
            raise ValueError(f"--warmup-h {self.warmup_h:g} must be at least 0 and below --horizon-h "
                             f"{self.horizon_h:g}")
        if self.checkpoint_min <= 0:
            raise ValueError(f"--checkpoint-min {self.checkpoint_min:g}: must be above 0")
        if not 1 <= self.cycle_s <= 300:
            raise ValueError(f"--cycle-s {self.cycle_s:g}: must be 1..300 seconds (trace times are whole seconds)")
        if not 1 <= self.reservations <= 100:
            raise ValueError(f"--reservations {self.reservations}: use 1 (EASY backfill) to 100")
        if self.priorities not in ("equal", "qos"):
            raise ValueError(f"--priorities {self.priorities!r}: use equal or qos")
        if self.estimates not in ("exact", "noisy", "none"):
            raise ValueError(f"--estimates {self.estimates!r}: use exact, noisy or none")


# -- the trace ----------------------------------------------------------------------------------------------

@dataclass
class Trace:
    """The pod list as task types: request, duration (s), qos and class, plus what was dropped or clamped."""

    nodes: list[GpuNode]
    requests: list[GpuRequest]
    durations: np.ndarray  # int seconds, >= 1
    qos: list[str]
    classes: list[str]
    mix: TaskMix
    stats: dict = field(default_factory=dict)

    @property
    def gpus(self) -> np.ndarray:
        return np.array([r.milli_total / 1000 for r in self.requests])

    @property
    def capacity_gpus(self) -> int:
        return sum(n.gpu_count for n in self.nodes)


def task_class(req: GpuRequest) -> str:
    """share (< 1 GPU), 1gpu, 2-4gpu, 8gpu (5 or more GPUs; the trace has only 8), cpu (no GPU)."""
    if req.cpu_only:
        return "cpu"
    if req.shared:
        return "share"
    n = req.gpu_count
    return "1gpu" if n == 1 else "2-4gpu" if n <= 4 else "8gpu"


def _read_qos(path: Path) -> dict[str, str]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if "qos" not in (reader.fieldnames or []):
            return {}
        return {row["name"]: (row.get("qos") or "").strip() for row in reader}


def load_trace(nodes_csv: Path, pods_csv: Path) -> Trace:
    report = LoadReport()
    nodes = load_nodes(nodes_csv, report)
    pods = load_pods(pods_csv, report, known_models={n.gpu_model for n in nodes})
    qos_of = _read_qos(pods_csv)
    reqs, durs, qos = [], [], []
    missing = negative = zero = 0
    for p in pods:
        if p.created is None or p.deleted is None:
            missing += 1
            continue
        d = p.deleted - p.created
        if d < 0:
            negative += 1
            continue
        if d == 0:
            zero += 1
            d = 1
        reqs.append(p.request)
        durs.append(d)
        qos.append(qos_of.get(p.request.key, "") or "none")
    if not reqs:
        raise ValueError(f"{pods_csv}: no task with both creation_time and deletion_time "
                         f"({len(report.rejected)} rows rejected)")
    counts: dict[str, int] = {}
    for q in qos:
        counts[q] = counts.get(q, 0) + 1
    stats = {"rows_rejected": len(report.rejected), "rejected_examples": report.rejected[:20],
             "dropped_missing_times": missing, "dropped_negative_duration": negative,
             "clamped_zero_duration_to_1s": zero, "tasks": len(reqs), "qos": counts}
    return Trace(nodes, reqs, np.array(durs, dtype=np.int64), qos, [task_class(r) for r in reqs],
                 TaskMix.from_requests([p.request for p in pods]), stats)


# -- arrivals ------------------------------------------------------------------------------------------------

@dataclass
class Arrivals:
    """Identical for every policy of a (seed, load): task type, arrival second, work, estimate factor."""

    kind: np.ndarray  # task type index
    at: np.ndarray  # arrival second (negative for the warm-start population: its virtual arrival)
    work: np.ndarray  # seconds of work left at submission
    noise: np.ndarray  # estimate factor (lognormal), per arrival
    initial: int  # the first ``initial`` entries are the warm-start population, submitted at t = 0
    rate: float  # arrivals per second


CHUNK = 4096


def make_arrivals(trace: Trace, cfg: DynamicConfig, seed: int) -> Arrivals:
    gpus = trace.gpus
    d = trace.durations.astype(np.float64)
    rate = cfg.load * trace.capacity_gpus / float((gpus * d).mean())
    horizon = cfg.horizon_h * 3600
    n = len(d)
    # the stream: unit-rate gaps, types and noise drawn in fixed chunks, so every load shares a prefix
    rng = np.random.default_rng(seed)
    kinds, times, noises = [], [], []
    clock = 0.0
    while clock < horizon:
        gaps = rng.exponential(1.0, CHUNK) / rate
        kinds.append(rng.integers(0, n, CHUNK))
        noises.append(rng.standard_normal(CHUNK))
        t = clock + np.cumsum(gaps)
        times.append(t)
        clock = float(t[-1])
    k, t, z = np.concatenate(kinds), np.floor(np.concatenate(times)), np.concatenate(noises)
    keep = t < horizon
    k, t, z = k[keep], t[keep], z[keep]
    # the warm start: the stationary population of an unlimited cluster (M/G/inf) at this rate
    rng0 = np.random.default_rng([seed, 1])
    n0 = int(rng0.poisson(rate * d.mean()))
    k0 = rng0.choice(n, size=n0, p=d / d.sum())
    age = np.floor(rng0.random(n0) * d[k0])
    z0 = rng0.standard_normal(n0)
    order = np.argsort(-age, kind="stable")  # oldest first: the order they arrived in
    k0, age, z0 = k0[order], age[order], z0[order]
    return Arrivals(kind=np.concatenate([k0, k]).astype(np.int64), at=np.concatenate([-age, t]),
                    work=np.concatenate([d[k0] - age, d[k]]), noise=np.exp(cfg.noise_sigma * np.concatenate([z0, z])),
                    initial=n0, rate=rate)


# -- one run -------------------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Job:
    key: str
    req: GpuRequest
    cls: str
    priority: int
    interruptible: bool
    arrival: float
    total: float  # trace duration (s)
    left: float  # work left when it last (re)started or was submitted
    estimate: float | None  # estimated total duration given to the scheduler (None: unknown)
    measured: bool
    queued_since: float = 0.0
    wait: float = 0.0
    start: float = 0.0  # when it started running (checkpoints count from here)
    stint: float = 0.0  # when its current stint of ``left`` work began (the warm start's jobs: t = 0)
    gen: int = 0
    evictions: int = 0


@dataclass
class RunStats:
    policy: str
    seed: int
    load: float
    time_avg_allocation: float
    queue_delay_p50_s: dict[str, float | None]
    queue_delay_p99_s: dict[str, float | None]
    max_wait_8gpu_s: float | None
    preemption_loss_frac: float
    preemptions: int
    moves: int
    lost_gpu_hours: float
    allocated_gpu_hours: float
    jobs: dict[str, int]
    still_waiting: dict[str, int]
    placements: int
    cycles: int
    initial_jobs: int
    initial_dropped: int
    wall_s: float
    waits: dict[str, list[float]] = field(default_factory=dict)  # per class, for plots


def _estimate(job: _Job) -> float | None:
    if job.estimate is None:
        return None
    done = job.total - job.left
    return max(1.0, job.estimate - done)


# per process: the warm start of one placer on one (seed, load) serves both FGD policies
_FILLS: dict[tuple, tuple[list[Allocation | None], dict | None]] = {}


def warm_fill(trace: Trace, arrivals: Arrivals, strategy: str, seed: int, placer: Placer,
              state: ClusterState) -> list[Allocation | None]:
    """Place the warm-start population with the policy's placer, oldest first; a task that fits nowhere
    is dropped (None). Reserved on ``state``. Cached per (strategy, seed, population) in this process."""
    key = (strategy, seed, arrivals.initial, arrivals.rate)
    rng = getattr(placer, "rng", None)  # tie-breaking draws: the placer continues as if it had placed them
    if key in _FILLS:
        allocs, rng_state = _FILLS[key]
        for alloc in allocs:
            if alloc is not None:
                state.reserve(alloc)
        if rng is not None:
            rng.bit_generator.state = rng_state
        return allocs
    out: list[Allocation | None] = []
    for i in range(arrivals.initial):
        req = replace(trace.requests[int(arrivals.kind[i])], key=f"t{i}")
        got = placer.place(state, req)
        if isinstance(got, Allocation):
            state.reserve(got)
            out.append(got)
        else:
            out.append(None)
    _FILLS.clear()
    _FILLS[key] = (out, rng.bit_generator.state if rng is not None else None)
    return out


def run_dynamic_one(trace: Trace, arrivals: Arrivals, policy: DynamicPolicy, cfg: DynamicConfig, seed: int,
                    keep_waits: bool = False, log: list[tuple] | None = None, skip_idle: bool = True) -> RunStats:
    """Replay one (seed, load) through ``schedule`` with one policy.

    ``log`` (tests) receives ("arrive" | "place" | "evict" | "depart" | "drop", time, key[, node]) in order;
    ``skip_idle=False`` runs every cycle, including those that cannot decide anything new."""
    note = log.append if log is not None else None
    t_wall = time.perf_counter()
    state = ClusterState(trace.nodes)
    placer = get_placer(policy.strategy, mix=trace.mix, seed=seed)
    placers: dict[str, Placer] = {policy.strategy: placer}

    def placer_for(name: str) -> Placer:
        if name not in placers:
            placers[name] = get_placer(name, mix=trace.mix, seed=seed)
        return placers[name]

    settings = policy.settings
    warm, horizon = cfg.warmup_h * 3600, cfg.horizon_h * 3600
    capacity = state.total_milli()
    jobs: dict[str, _Job] = {}
    waiting: dict[str, WaitingJob] = {}
    running: dict[str, RunningJob] = {}
    by_node: dict[str, dict[str, RunningJob]] = {n.name: {} for n in trace.nodes}
    views = {name: jobs_there.values() for name, jobs_there in by_node.items()}  # live: the cycle's node index
    departures: list[tuple[float, int, str]] = []
    allocated = 0  # milli-GPU now
    alloc_integral = 0.0
    lost_gpu_s = 0.0
    preemptions = moves = placements = cycles = 0

    def submit(i: int, now: float) -> None:
        kind = int(arrivals.kind[i])
        tmpl = trace.requests[kind]
        key = f"t{i}"
        req = replace(tmpl, key=key)
        qos = trace.qos[kind]
        prio = 0 if cfg.priorities == "equal" or qos == "BE" else 1
        total = float(trace.durations[kind])
        est = None if cfg.estimates == "none" else total * (float(arrivals.noise[i]) if cfg.estimates == "noisy"
                                                            else 1.0)
        at = float(arrivals.at[i])
        job = _Job(key, req, trace.classes[kind], prio, qos == "BE", at, total, float(arrivals.work[i]), est,
                   measured=warm <= at < horizon, queued_since=now)
        jobs[key] = job
        waiting[key] = _waiting(job)
        fresh.append(key)
        if note is not None:
            note(("arrive", now, key))

    def _waiting(job: _Job, nominated: str | None = None) -> WaitingJob:
        return WaitingJob(key=job.key, request=job.req, priority=job.priority, queued_at=job.arrival,
                          duration_s=_estimate(job), interruptible=job.interruptible, strategy=policy.strategy,
                          nominated_node=nominated)

    # Cycles that cannot decide anything new are not run (kube-scheduler's queueing hints): with no
    # capacity back since the last cycle, a strict-FIFO queue whose head was blocked stays blocked, and
    # under unrestricted backfill only the new arrivals can start (the picture only filled since every
    # older job last failed). The result is the same as running the full cycle; tests check it.
    skip_ok = skip_idle and not (settings.preemption or settings.defragmentation) and settings.backfill != Backfill.EASY
    fresh: list[str] = []
    last = {"returned": True, "head_blocked": False}

    def start(job: _Job, alloc: Allocation, now: float) -> None:
        """``job`` holds ``alloc`` from ``now`` (already reserved on the picture) until its work is done."""
        nonlocal allocated
        job.stint = now
        est = _estimate(job)
        rj = RunningJob(key=job.key, alloc=alloc, priority=job.priority, interruptible=job.interruptible,
                        started_at=job.start, expected_end=None if est is None else now + est,
                        strategy=policy.strategy, request=job.req)
        running[job.key] = rj
        by_node[alloc.node][job.key] = rj
        allocated += job.req.milli_total
        heapq.heappush(departures, (now + job.left, job.gen, job.key))

    def cycle(now: float) -> None:
        nonlocal allocated, lost_gpu_s, preemptions, moves, placements, cycles
        if skip_ok and not last["returned"]:
            if settings.backfill == Backfill.NONE and last["head_blocked"]:
                fresh.clear()
                return
            if settings.backfill == Backfill.UNRESTRICTED:
                pending = [waiting[k] for k in fresh if k in waiting]
            else:
                pending = list(waiting.values())
        else:
            pending = list(waiting.values())
        fresh.clear()
        for _ in range(1 + FOLLOW_UPS):
            cycles += 1
            snap = Snapshot(state=state, now=now, waiting=pending, running=list(running.values()),
                            settings=settings, running_by_node=views)
            res = schedule(snap, placer_for)
            last["returned"] = bool(res.evictions)
            last["head_blocked"] = res.head is not None
            for p in res.placed:
                job = jobs[p.key]
                del waiting[p.key]
                job.wait += now - job.queued_since
                job.start = now
                start(job, p.alloc, now)
                placements += 1
                if note is not None:
                    note(("place", now, job.key, p.alloc.node))
            for w in res.waiting:
                wj = waiting[w.key]
                if wj.nominated_node != w.nominated_node:
                    waiting[w.key] = replace(wj, nominated_node=w.nominated_node)
            for e in res.evictions:
                job = jobs[e.key]
                rj = running.pop(e.key)
                del by_node[rj.alloc.node][e.key]
                state.release(e.key)
                allocated -= job.req.milli_total
                job.left = job.left - (now - job.stint) + e.lost_s
                job.gen += 1  # its departure is void
                job.evictions += 1
                job.queued_since = now
                waiting[e.key] = _waiting(job)
                if note is not None:
                    note(("evict", now, e.key, e.reason))
                if warm <= now < horizon:
                    lost_gpu_s += e.lost_s * job.req.milli_total / 1000
                    if e.reason == "Preempted":
                        preemptions += 1
                    else:
                        moves += 1
            if not res.evictions:
                break
            pending = list(waiting.values())  # the follow-up: victims back in the queue, their GPUs free

    n_all = len(arrivals.kind)
    fill = warm_fill(trace, arrivals, policy.strategy, seed, placer, state)
    dropped = 0
    for i, alloc in enumerate(fill):
        if alloc is None:
            dropped += 1
            if note is not None:
                note(("drop", 0.0, f"t{i}"))
            continue
        submit(i, 0.0)
        job = jobs[f"t{i}"]
        del waiting[job.key]
        job.start = job.arrival  # it has run since it arrived (an unlimited cluster has no queue)
        start(job, alloc, 0.0)
        if note is not None:
            note(("fill", 0.0, job.key, alloc.node))
    fresh.clear()
    nxt = arrivals.initial
    clock = 0.0
    tick = cfg.cycle_s
    pending: float | None = None  # when the next cycle runs (the first tick at or after an event)
    while True:
        t_arr = float(arrivals.at[nxt]) if nxt < n_all else math.inf
        t_dep = departures[0][0] if departures else math.inf
        t_event = min(t_arr, t_dep)
        now = t_event if pending is None or t_event <= pending else pending
        if now >= horizon:
            break
        if now > warm:
            alloc_integral += allocated * (now - max(clock, warm))
        clock = now
        if now < t_event:  # the cycle's tick, after every event up to it
            pending = None
            if waiting:
                cycle(now)
            continue
        while departures and departures[0][0] <= now:
            _, gen, key = heapq.heappop(departures)
            job = jobs[key]
            if gen != job.gen or key not in running:
                continue
            rj = running.pop(key)
            del by_node[rj.alloc.node][key]
            state.release(key)
            allocated -= job.req.milli_total
            last["returned"] = True
            if note is not None:
                note(("depart", now, key))
        while nxt < n_all and arrivals.at[nxt] <= now:
            submit(nxt, now)
            nxt += 1
        if pending is None and waiting:
            pending = math.ceil(now / tick) * tick  # now itself when on a tick: runs before any later event
    alloc_integral += allocated * (horizon - max(clock, warm))
    if allocated != state.allocated_milli() or len(running) != len(state.allocations):
        raise RuntimeError(f"replay bookkeeping broke: {allocated} milli-GPU counted, {state.allocated_milli()} "
                           "reserved")

    waits: dict[str, list[float]] = {c: [] for c in CLASSES}
    still: dict[str, int] = {c: 0 for c in CLASSES}
    for job in jobs.values():
        if not job.measured:
            continue
        w = job.wait
        if job.key in waiting:
            w += horizon - job.queued_since
            still[job.cls] += 1
        waits[job.cls].append(w)

    def pct(xs: list[float], q: float) -> float | None:
        return float(np.percentile(xs, q)) if xs else None

    allocated_gpu_h = alloc_integral / 1000 / 3600
    return RunStats(
        policy=policy.name, seed=seed, load=cfg.load,
        time_avg_allocation=alloc_integral / (capacity * (horizon - warm)),
        queue_delay_p50_s={c: pct(waits[c], 50) for c in CLASSES},
        queue_delay_p99_s={c: pct(waits[c], 99) for c in CLASSES},
        max_wait_8gpu_s=max(waits["8gpu"]) if waits["8gpu"] else None,
        preemption_loss_frac=(lost_gpu_s / 3600) / allocated_gpu_h if allocated_gpu_h else 0.0,
        preemptions=preemptions, moves=moves, lost_gpu_hours=lost_gpu_s / 3600,
        allocated_gpu_hours=allocated_gpu_h,
        jobs={c: len(waits[c]) for c in CLASSES}, still_waiting=still, placements=placements, cycles=cycles,
        initial_jobs=arrivals.initial, initial_dropped=dropped, wall_s=time.perf_counter() - t_wall,
        waits={c: [round(x, 1) for x in v] for c, v in waits.items()} if keep_waits else {},
    )


# -- many runs -----------------------------------------------------------------------------------------------

def _median(xs: Iterable[float | None]) -> float | None:
    got = [x for x in xs if x is not None and not math.isnan(x)]
    return float(np.median(got)) if got else None


def _block(values: list) -> dict:
    return {"median": _median(values), "per_seed": values}


def summarise(runs: list[RunStats]) -> dict:
    """One policy's JSON block at one load: medians and per-seed values (seeds in order)."""
    def per_class(attr: str, classes: Iterable[str] = CLASSES) -> dict:
        return {c: _block([getattr(r, attr)[c] for r in runs]) for c in classes}

    return {
        "time_avg_allocation": _block([r.time_avg_allocation for r in runs]),
        "queue_delay_p50_s": per_class("queue_delay_p50_s"),
        "queue_delay_p99_s": per_class("queue_delay_p99_s"),
        "max_wait_8gpu_s": _block([r.max_wait_8gpu_s for r in runs]),
        "preemption_loss_frac": _block([r.preemption_loss_frac for r in runs]),
        "preemptions": _block([r.preemptions for r in runs]),
        "moves": _block([r.moves for r in runs]),
        "lost_gpu_hours": _block([r.lost_gpu_hours for r in runs]),
        "jobs": per_class("jobs"),
        "still_waiting": per_class("still_waiting"),
        "initial_dropped": _block([r.initial_dropped for r in runs]),
        "cycles": _block([r.cycles for r in runs]),
        "wall_s": _block([r.wall_s for r in runs]),
    }


_TRACE: Trace | None = None


def _init_worker(nodes_csv: Path, pods_csv: Path) -> None:
    global _TRACE
    _TRACE = load_trace(nodes_csv, pods_csv)


def _run_task(task: tuple[DynamicConfig, int, tuple[str, ...], bool]) -> list[RunStats]:
    """Every policy of one (load, seed) in one process: one arrival stream, one FGD warm start."""
    cfg, seed, names, keep = task
    assert _TRACE is not None
    arrivals = make_arrivals(_TRACE, cfg, seed)
    table = _policies(cfg.checkpoint_min * 60, cfg.reservations)
    return [run_dynamic_one(_TRACE, arrivals, table[n], cfg, seed, keep_waits=keep) for n in names]


def run_dynamic(nodes_csv: Path, pods_csv: Path, policies: list[str], loads: list[float], seeds: int,
                json_out: Path | None = None, plot: Path | None = None, workers: int = 1, quiet: bool = False,
                **options) -> dict:
    """Every (load, seed, policy); JSON keyed ``policies`` (one load) or ``loads.<load>.policies``."""
    names = tuple(dict.fromkeys(p.strip().lower() for p in policies if p.strip()))
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown or not names:
        raise ValueError(f"--policy {','.join(unknown) or '(empty)'}: dynamic mode compares "
                         f"{', '.join(POLICY_NAMES)} (comma-separated)")
    if not loads:
        raise ValueError("--load: give one or more loads, e.g. 1.0 or 0.8,1.0,1.2")
    cfgs = [DynamicConfig(load=load, **options) for load in loads]
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    trace = load_trace(nodes_csv, pods_csv)
    seed_list = list(range(FIRST_SEED, FIRST_SEED + seeds))
    say(f"cluster: {len(trace.nodes)} GPU nodes, {trace.capacity_gpus} GPUs; tasks: {trace.stats['tasks']} "
        f"(zero durations clamped to 1 s: {trace.stats['clamped_zero_duration_to_1s']}, dropped without times: "
        f"{trace.stats['dropped_missing_times']}, negative: {trace.stats['dropped_negative_duration']}); "
        f"qos {trace.stats['qos']}")
    keep = plot is not None
    tasks = [(cfg, seed, names, keep) for cfg in cfgs for seed in seed_list]
    results: dict[tuple[float, int], list[RunStats]] = {}
    t0 = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(nodes_csv, pods_csv)) as pool:
            for task, runs in zip(tasks, pool.map(_run_task, tasks), strict=True):
                results[(task[0].load, task[1])] = runs
                say(_progress(runs, time.perf_counter() - t0))
    else:
        global _TRACE
        _TRACE = trace
        for task in tasks:
            runs = _run_task(task)
            results[(task[0].load, task[1])] = runs
            say(_progress(runs, time.perf_counter() - t0))
    per_load = {}
    for cfg in cfgs:
        block: dict = {"load": cfg.load, "policies": {}}
        for j, name in enumerate(names):
            runs = [results[(cfg.load, seed)][j] for seed in seed_list]
            block["policies"][name] = summarise(runs)
            if keep:
                block["policies"][name]["waits"] = {c: [x for r in runs for x in r.waits[c]] for c in CLASSES}
        block["arrival_rate_per_s"] = make_arrivals(trace, cfg, seed_list[0]).rate
        per_load[f"{cfg.load:g}"] = block
    first = cfgs[0]
    out: dict = {
        "mode": "dynamic", "nodes": str(nodes_csv), "pods": str(pods_csv), "seeds": seed_list,
        "protocol": {k: v for k, v in asdict(first).items() if k != "load"}
        | {"classes": list(CLASSES), "gpu_capacity": trace.capacity_gpus, "follow_up_cycles": FOLLOW_UPS},
        "trace": trace.stats, "wall_s": time.perf_counter() - t0, "code": _code_version(),
    }
    if len(cfgs) == 1:
        out.update(per_load[f"{first.load:g}"])
    else:
        out["loads"] = per_load
    print_table(out)
    if json_out is not None:
        slim = json.loads(json.dumps(out, default=float))
        for blk in ([slim] if "policies" in slim else slim["loads"].values()):
            for pol in blk["policies"].values():
                pol.pop("waits", None)
        json_out.write_text(json.dumps(slim, indent=1))
        say(f"wrote {json_out}")
    if plot is not None:
        draw(out, plot)
        say(f"wrote {plot}")
    return out


def _code_version() -> str | None:
    """The commit the numbers come from, marked when the package's files differ from it."""
    import subprocess

    here = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}{' (modified)' if dirty else ''}" if head else None


def _progress(runs: list[RunStats], elapsed: float) -> str:
    r0 = runs[0]
    parts = [f"{r.policy} {100 * r.time_avg_allocation:.1f}% p99(1gpu) {_fmt(r.queue_delay_p99_s['1gpu'])} "
             f"({r.wall_s:.0f}s)" for r in runs]
    return f"  load {r0.load:g} seed {r0.seed}: " + "; ".join(parts) + f"  [{elapsed:.0f}s]"


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if x < 10_000 else f"{x / 3600:.1f}h"


def print_table(out: dict) -> None:
    blocks = [out] if "policies" in out else list(out["loads"].values())
    n = len(out["seeds"])
    for blk in blocks:
        print(f"\nload {blk['load']:g}: median of {n} seed(s); queueing delay in s (h where marked)")
        head = " ".join(f"{'p50/p99 ' + c:>17}" for c in GPU_CLASSES)
        print(f"{'policy':<13} {'alloc %':>7} {head} {'max 8gpu':>9} {'preempt':>7} {'moves':>6} {'lost %':>7}")
        for name, s in blk["policies"].items():
            pair = [_fmt(s["queue_delay_p50_s"][c]["median"]) + "/" + _fmt(s["queue_delay_p99_s"][c]["median"])
                    for c in GPU_CLASSES]
            cells = " ".join(f"{p:>17}" for p in pair)
            alloc = s["time_avg_allocation"]["median"]
            print(f"{name:<13} {100 * alloc:>7.2f} {cells} {_fmt(s['max_wait_8gpu_s']['median']):>9} "
                  f"{s['preemptions']['median']:>7.0f} {s['moves']['median']:>6.0f} "
                  f"{100 * s['preemption_loss_frac']['median']:>7.3f}")


def draw(out: dict, path: Path) -> None:
    """Queueing delay distributions (CDF over every seed's measured jobs), one panel per class and load."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit("--plot needs matplotlib: pip install 'gensched[plot]'") from exc
    blocks = [out] if "policies" in out else list(out["loads"].values())
    fig, axes = plt.subplots(len(blocks), len(GPU_CLASSES), figsize=(4 * len(GPU_CLASSES), 3.2 * len(blocks)),
                             squeeze=False)
    for i, blk in enumerate(blocks):
        for j, cls in enumerate(GPU_CLASSES):
            ax = axes[i][j]
            for name, s in blk["policies"].items():
                w = np.sort(np.asarray(s.get("waits", {}).get(cls, []), dtype=float))
                if w.size == 0:
                    continue
                ax.step(np.maximum(w, 1.0), np.arange(1, w.size + 1) / w.size, where="post", label=name)
            ax.set_xscale("log")
            ax.set_title(f"{cls}, load {blk['load']:g}")
            ax.set_xlabel("queueing delay (s, 1 s = none)")
            ax.set_ylabel("fraction of jobs")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
