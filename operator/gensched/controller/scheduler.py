"""The scheduling cycle's adapter: a snapshot from the caches in, decisions applied to the API out.

Place: one Job patch records the reservation, pins the node and unsuspends (nothing runs without its
placement); a write whose outcome is unknown is settled by reading the Job back, and until then its
GPUs stay counted (``assumed``), so they are never handed out twice. Evict: the victim's Job is
suspended with an eviction mark (its GPUs come back once its pods are gone, see lifecycle). Wait: the
job's status says its queue position and what it waits for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from pydantic import ValidationError

from gensched.api import GenerativeJobSpec, Phase
from gensched.api.durations import parse_duration, parse_instant, rfc3339
from gensched.api.errors import bounded
from gensched.controller import telemetry
from gensched.controller.cache import CACHE
from gensched.controller.events import post
from gensched.controller.kube import kube, outcome_unknown
from gensched.controller.lifecycle import placement_status, resolve_policy
from gensched.controller.objects import ANN_EVICT, ANN_PLACEMENT, decode_allocation, evict_patch, release_patch
from gensched.controller.picture import Picture
from gensched.controller.policy_status import namespace_blocks
from gensched.controller.reservations import RESERVATIONS
from gensched.controller.step import Step, now
from gensched.packing import Allocation
from gensched.sched import (
    Backfill,
    CycleResult,
    Evict,
    Place,
    Quota,
    RunningJob,
    Settings,
    Snapshot,
    Wait,
    WaitingJob,
    schedule,
)

log = logging.getLogger(__name__)
POSITION_REFRESH_S = 30.0  # a waiting job's position is rewritten at most this often (reason changes: at once)
# Position-only rewrites, all waiting jobs together, head of the queue first: with thousands waiting, every
# placement shifts every later position, and rewriting them all every 30 s was a steady ~100 writes/s.
POSITION_WRITES_PER_S, POSITION_BURST = 20.0, 200.0
BUDGET_WAIT = StrEnum("BudgetWait", {"BUDGET": "BudgetExhausted"}).BUDGET  # not a sched/ reason: decided here


def settings_from_policies() -> tuple[Settings, dict[str, Quota], float]:
    """Cluster-wide queueing settings (the strictest of all valid policies) and namespace quotas."""
    from gensched.api import SchedulingPolicySpec

    specs = []
    for p in CACHE.view("policies"):
        try:
            specs.append(SchedulingPolicySpec.model_validate(p.get("spec") or {}))
        except ValidationError:
            continue
    if not specs:
        specs = [SchedulingPolicySpec()]
    q = [s.queueing for s in specs]
    cfg = Settings(backfill=Backfill.EASY if all(x.backfill for x in q) else Backfill.NONE,
                   preemption=all(x.preemption for x in q), defragmentation=all(x.defragmentation for x in q),
                   max_preemptions=min(x.max_preemptions_per_cycle for x in q),
                   max_moves=min(x.max_moves_per_cycle for x in q))
    quotas: dict[str, Quota] = {}
    periods: dict[str, float] = {}
    for s in specs:
        for nq in s.quotas:
            old = quotas.get(nq.namespace)
            if old is None or (nq.max_gpus or float("inf")) < (old.max_gpus or float("inf")):
                quotas[nq.namespace] = Quota(nq.namespace, nq.max_gpus, nq.max_gpu_hours, 0.0, nq.cohort,
                                             nq.borrowing)
                periods[nq.namespace] = parse_duration(nq.period).total_seconds()
    used = _gpu_hours_used(periods)
    quotas = {ns: Quota(q.namespace, q.max_gpus, q.max_gpu_hours, used.get(ns, 0.0), q.cohort, q.borrowing)
              for ns, q in quotas.items()}
    return cfg, quotas, min(x.cycle_seconds for x in q)


def _gpu_hours_used(periods: dict[str, float]) -> dict[str, float]:
    """GPU-hours each quota'd namespace used in its period (finished jobs' gpuHours, running jobs so far)."""
    if not periods:
        return {}
    t = now()
    out: dict[str, float] = {}
    for gj in CACHE.view("generativejobs"):
        ns = gj["metadata"]["namespace"]
        if ns not in periods:
            continue
        st = gj.get("status") or {}
        since = t - timedelta(seconds=periods[ns])
        try:
            if st.get("finishedAt") and parse_instant(st["finishedAt"]) >= since:
                out[ns] = out.get(ns, 0.0) + float(st.get("gpuHours") or 0.0)
            elif st.get("phase") in ("Placed", "Running") and st.get("releasedAt"):
                start = max(parse_instant(st["releasedAt"]), since)
                gpus = float(((gj.get("spec") or {}).get("resources") or {}).get("gpus") or 0)
                out[ns] = out.get(ns, 0.0) + max(0.0, (t - start).total_seconds()) / 3600 * gpus
        except (ValueError, TypeError):
            continue
    return out


_SPECS: dict[tuple[str, str | None, int | None], GenerativeJobSpec | None] = {}  # (key, uid, generation)
SPEC_MEMO = 50_000


def _spec_of(key: str, gj: dict) -> GenerativeJobSpec | None:
    """The job's validated spec, parsed once per generation (every cycle looks at every running job)."""
    meta = gj["metadata"]
    memo = (key, meta.get("uid"), meta.get("generation"))
    if memo not in _SPECS:
        if len(_SPECS) >= SPEC_MEMO:
            _SPECS.clear()
        try:
            _SPECS[memo] = GenerativeJobSpec.model_validate(gj.get("spec") or {})
        except ValidationError:
            _SPECS[memo] = None
    return _SPECS[memo]


def running_jobs(pic: Picture) -> list[RunningJob]:
    out = []
    strategies: dict[str | None, str] = {}
    for key, (job, alloc) in pic.jobs.items():
        gj = CACHE.peek("generativejobs", key)  # read only
        if gj is None:
            continue
        spec = _spec_of(key, gj)
        ref = spec.policy_ref if spec else None
        if ref not in strategies:
            strategies[ref] = _strategy(spec)
        st = gj.get("status") or {}
        started = _ts((job.get("status") or {}).get("startTime")) or _ts(st.get("releasedAt")) or time.time()
        duration = None
        if spec and spec.batch and spec.batch.estimated_duration:
            duration = parse_duration(spec.batch.estimated_duration).total_seconds()
        evicting = bool((job["metadata"].get("annotations") or {}).get(ANN_EVICT))
        prio = (st.get("queue") or {}).get("priority")
        out.append(RunningJob(
            key=key, alloc=alloc, namespace=gj["metadata"]["namespace"], priority=int(prio or 0),
            interruptible=bool(spec and spec.batch and spec.batch.interruptible), started_at=started,
            expected_end=started + duration if duration else None, evicting=evicting,
            strategy=strategies[ref]))
    return out


def _strategy(spec: GenerativeJobSpec | None) -> str:
    try:
        return resolve_policy(spec.policy_ref if spec else None)[1].packing.strategy
    except LookupError:
        return "Gensched"


def _ts(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parse_instant(text).timestamp()
    except ValueError:
        return None


class Scheduler:
    """Runs the cycle and applies its decisions; remembers unresolved writes and what it last wrote."""

    def __init__(self, may_write: Callable[[], bool], workers: int = 8) -> None:
        self.may_write = may_write
        self.assumed: dict[str, Allocation] = {}  # GJ key -> allocation written with an unknown outcome
        self._written: dict[str, tuple[tuple, float]] = {}  # GJ key -> (what the queue status said, when)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gensched-apply")
        self.last: CycleResult | None = None
        self._pending: dict[str, Step] = {}  # during apply: the passes' unwritten changes per job
        self._releases: dict[str, dict] = {}  # during apply: the release patches, stamped in decision order
        self._tokens, self._tokens_at = POSITION_BURST, time.monotonic()  # position-only rewrites (token bucket)

    def settle(self) -> None:
        """Read back Jobs whose release had an unknown outcome: keep them counted until we know."""
        for key in list(self.assumed):
            ns, name = key.split("/", 1)
            from gensched.controller.objects import job_name

            try:
                job = kube().get_job(ns, job_name(name))
            except Exception:
                continue  # still unknown: stays counted
            if job is not None:
                CACHE.observe("jobs", "MODIFIED", job)
            self.assumed.pop(key, None)
            if job is not None and (job["metadata"].get("annotations") or {}).get(ANN_PLACEMENT):
                CACHE.mark(key)  # it was released after all: the lifecycle mirrors it

    def cycle(self, pic: Picture, waiting: list[WaitingJob], steps: dict[str, Step] | None = None) -> CycleResult:
        """Run the cycle and apply it; ``steps``: the passes' unwritten status changes per job (see Outcome)."""
        cfg, quotas, _ = settings_from_policies()
        for w in waiting:
            RESERVATIONS.learn(w.request)
        waiting = [w for w in waiting if w.key not in pic.jobs and w.key not in self.assumed]
        blocks = namespace_blocks()  # namespaces over their accounting budget: like a quota, new work waits
        held = [w for w in waiting if w.namespace in blocks] if blocks else []
        snap = Snapshot(state=pic.state, now=time.time(), waiting=[w for w in waiting if w.namespace not in blocks],
                        running=running_jobs(pic), quotas=quotas, taints=pic.taints, settings=cfg)
        result = schedule(snap, RESERVATIONS.placer)
        for i, w in enumerate(sorted(held, key=lambda w: (-w.priority, w.queued_at, w.key))):
            pos = len(snap.waiting) + i + 1
            result.waiting.append(Wait(w.key, BUDGET_WAIT, blocks[w.namespace], pos))  # type: ignore[arg-type]
        self.last = result
        self.apply(result, {w.key: w for w in waiting}, steps or {})
        telemetry.call("record_cycle", len(result.placed), len(result.waiting), len(result.evictions))
        counts: dict[tuple[str, str], int] = {}
        oldest: dict[str, float] = {}
        by_key = {w.key: w for w in waiting}
        for w in result.waiting:
            job = by_key[w.key]
            counts[(job.namespace, w.reason.value)] = counts.get((job.namespace, w.reason.value), 0) + 1
            oldest[job.namespace] = min(oldest.get(job.namespace, job.queued_at), job.queued_at)
        telemetry.call("set_pending", counts, oldest)
        return result

    def apply(self, result: CycleResult, waiting: dict[str, WaitingJob], steps: dict[str, Step] | None = None) -> None:
        """Write the decisions (in parallel), each with its pass's changes; then the passes' changes that no
        decision wrote. A Wait with nothing new to say and no pass changes costs no task and no API call."""
        self._pending = dict(steps or {})
        # the release records are stamped here, in decision order: their ``at`` orders decisions for audits and
        # replays, and the patches below go out in parallel, in no particular order
        self._releases = {d.key: release_patch(d.alloc) for d in result.placed}
        tasks = [(self._place, d) for d in result.placed] + [(self._evict, d) for d in result.evictions]
        self._tokens = min(POSITION_BURST, self._tokens + (time.monotonic() - self._tokens_at) * POSITION_WRITES_PER_S)
        self._tokens_at = time.monotonic()
        for d in result.waiting:  # in queue order
            due = "pass" if d.key in self._pending else self._wait_due(d, waiting)
            if due == "position":
                if self._tokens < 1:
                    continue  # a later cycle rewrites it; a new reason is never held back
                self._tokens -= 1
            if due:
                tasks.append((self._wait, d))
        futures = [self._pool.submit(self._guard, fn, d, waiting) for fn, d in tasks]
        for f in futures:
            f.result()
        left, self._pending = self._pending, {}
        futures = [self._pool.submit(self._flush, key, step) for key, step in left.items() if step.changes()
                   or step.events]
        for f in futures:
            f.result()

    def _flush(self, key: str, step: Step) -> None:
        if not self.may_write():
            CACHE.mark(key)
            return
        try:
            step.flush()
        except Exception as exc:
            log.warning("%s: status not written: %s", key, bounded(exc, 300))
            CACHE.mark(key)

    def _step(self, key: str, gj: dict) -> Step:
        """The pass's step for ``key`` if it was computed from this very version of the job, else a new one
        (a newer version arrived since: it gets its own pass, which recomputes those changes)."""
        step = self._pending.pop(key, None)
        if step is not None and step.body["metadata"].get("resourceVersion") == gj["metadata"].get("resourceVersion"):
            return step
        return Step(gj)

    def _guard(self, fn: Callable, decision: object, waiting: dict[str, WaitingJob]) -> None:
        if not self.may_write():
            return
        try:
            fn(decision, waiting)
        except Exception as exc:
            key = getattr(decision, "key", "?")
            log.warning("applying %s for %s failed: %s", type(decision).__name__, key, bounded(exc, 300))
            CACHE.mark(key)

    def _place(self, d: Place, waiting: dict[str, WaitingJob]) -> None:
        gj = CACHE.get("generativejobs", d.key)
        if gj is None:
            return
        ns, jname = gj["metadata"]["namespace"], (gj.get("status") or {}).get("jobName")
        if not jname:
            from gensched.controller.objects import job_name

            jname = job_name(gj["metadata"]["name"])
        try:
            reply = kube().patch_job(ns, jname, self._releases.pop(d.key, None) or release_patch(d.alloc))
        except Exception as exc:
            if not outcome_unknown(exc):
                log.warning("%s: release refused (%s); it stays queued", d.key, bounded(exc, 200))
                CACHE.mark(d.key)
                return
            self.assumed[d.key] = d.alloc  # maybe committed: keep its GPUs counted until read back
            self.settle()
            if d.key in self.assumed or not self._released(ns, jname, d.alloc):
                return
            reply = CACHE.get("jobs", f"{ns}/{jname}")
        if reply:
            CACHE.observe("jobs", "MODIFIED", reply)
        job = waiting.get(d.key)
        step = self._step(d.key, gj)
        where = f"on node {d.alloc.node}, GPU {','.join(map(str, d.alloc.gpu_indices))}"
        if d.alloc.gpu_milli != 1000:
            where += f" ({d.alloc.gpu_milli / 1000:g} of the GPU)"
        step.status["releasedAt"] = rfc3339(now())
        step.status["placement"] = placement_status(d.alloc)
        queue = dict((gj.get("status") or {}).get("queue") or {})
        queue.update(position=None, reason=None, waitingFor=None, reservedNode=None,
                     priority=job.priority if job else queue.get("priority"))
        step.status["queue"] = {k: v for k, v in queue.items() if v is not None}
        step.condition("Placed", True, "GPUsReserved", where)
        how = f" by {job.strategy}" if job else ""
        step.phase(Phase.PLACED, f"placed {where}", ("Placed", f"placed {where}{how}"
                                                     + (" (backfilled)" if d.backfill else "")))
        step.flush()
        self._written.pop(d.key, None)
        queued = _ts(queue.get("queuedAt")) or _ts(gj["metadata"].get("creationTimestamp"))
        if queued:
            telemetry.call("observe_admission_wait", ns, max(0.0, time.time() - queued))

    def _released(self, ns: str, jname: str, alloc: Allocation) -> bool:
        job = CACHE.get("jobs", f"{ns}/{jname}")
        raw = ((job or {}).get("metadata", {}).get("annotations") or {}).get(ANN_PLACEMENT)
        return bool(raw) and decode_allocation(raw) == alloc

    def _evict(self, d: Evict, waiting: dict[str, WaitingJob]) -> None:
        victim = CACHE.get("generativejobs", d.key)
        by = CACHE.get("generativejobs", d.by)
        if victim is None:
            return
        ns = victim["metadata"]["namespace"]
        jname = (victim.get("status") or {}).get("jobName") or victim["metadata"]["name"]
        reply = kube().patch_job(ns, jname, evict_patch(d.by, d.reason))
        CACHE.observe("jobs", "MODIFIED", reply)
        what = "moved to make room" if d.reason == "Defragment" else "preempted"
        post(victim, "Normal", d.reason, f"{what} for {d.by} on node {d.node}: suspended, it checkpoints and "
                                         f"queues again (about {d.lost_s:.0f} s of work since its last checkpoint)")
        if by is not None:
            verb = "moving" if d.reason == "Defragment" else "preempting"
            post(by, "Normal", "Preempting" if d.reason == "Preempted" else "Defragmenting",
                 f"{verb} {d.key} on node {d.node} to make room")
        telemetry.call("record_preemption", d.reason)
        CACHE.mark(d.key)

    @staticmethod
    def _said(d: Wait) -> tuple:
        return d.reason.value, d.message if d.reason.value != "Unschedulable" else d.message[:60], d.nominated_node

    def _wait_due(self, d: Wait, waiting: dict[str, WaitingJob], gj: dict | None = None) -> str | None:
        """What a queue status write would bring: "reason" (a new reason, or not Pending yet), "position" (a
        new position, at most every 30 s), or None (nothing new: no write)."""
        gj = gj if gj is not None else CACHE.peek("generativejobs", d.key)
        if gj is None or d.key not in waiting:
            return None
        st = gj.get("status") or {}
        last = self._written.get(d.key)
        if last is None or last[0] != self._said(d) or st.get("phase") != Phase.PENDING.value:
            return "reason"
        if (st.get("queue") or {}).get("position") == d.position or time.monotonic() - last[1] < POSITION_REFRESH_S:
            return None
        return "position"

    def _wait(self, d: Wait, waiting: dict[str, WaitingJob]) -> None:
        gj = CACHE.get("generativejobs", d.key)
        job = waiting.get(d.key)
        if gj is None or job is None or not self._wait_due(d, waiting, gj):
            return  # nothing new to say (a pass's changes are written by apply)
        st = gj.get("status") or {}
        queue = dict(st.get("queue") or {})
        said = self._said(d)
        queue.update(position=d.position, priority=job.priority, reason=d.reason.value,
                     waitingFor=bounded(d.message, 512),
                     queuedAt=queue.get("queuedAt") or datetime.fromtimestamp(job.queued_at, UTC).strftime(
                         "%Y-%m-%dT%H:%M:%SZ"))
        if d.nominated_node:
            queue["reservedNode"] = d.nominated_node
        else:
            queue.pop("reservedNode", None)
        step = self._step(d.key, gj)
        step.status["queue"] = queue
        ok = d.reason.value not in ("NeverFits", "QuotaExceeded", "BudgetExhausted")
        step.condition("Placed", False, d.reason.value, d.message)
        text = {"Unschedulable": "waiting for GPUs", "NeverFits": "cannot be placed",
                "QuotaExceeded": "waiting for quota", "BehindHead": "queued", "BudgetExhausted": "waiting for budget",
                "Preempting": "making room", "Defragmenting": "making room"}[d.reason.value]
        mine = len(step.events)  # the pass's own Events (if any) stay
        step.phase(Phase.PENDING, f"{text}: {d.message}", (d.reason.value, d.message), warn=not ok)
        if st.get("phase") == Phase.PENDING.value and st.get("message", "").split(":")[0] == text:
            del step.events[mine:]  # same kind of wait: the queue status is updated quietly
        if step.flush():
            self._written[d.key] = (said, time.monotonic())
