"""The one reconcile loop: per-job passes for what changed or is due, then one scheduling cycle.

It runs in its own thread, woken by cache changes or every ``period`` seconds, and passes at most
``PASS_BATCH`` jobs per iteration (the rest wait for the next one, which starts at once). Only the Lease holder
runs passes and writes; a standby only keeps its caches (kopf's watches) and a heartbeat. Every
``resync`` seconds it re-lists everything, which repairs any lost watch event, and every job is
looked at again (level-triggered: a missed event costs at most one resync).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from gensched.api.errors import bounded
from gensched.controller import picture, policy_status, telemetry
from gensched.controller.cache import CACHE
from gensched.controller.kube import kube
from gensched.controller.leader import LeaderElector
from gensched.controller.lifecycle import Outcome, reconcile
from gensched.controller.reservations import RESERVATIONS
from gensched.controller.scheduler import Scheduler, settings_from_policies
from gensched.controller.step import Step
from gensched.sched import WaitingJob

log = logging.getLogger(__name__)
RETRY_MIN_S, RETRY_MAX_S = 0.5, 30.0  # back-off of a pass that failed
# Passes per iteration: a burst of thousands is passed in slices with a cycle after each, so decisions flow
# while the rest is still being looked at, and the passes' unwritten changes held for the cycle stay bounded.
PASS_BATCH = 500


def relist() -> None:
    """Fill or refresh every cache from a LIST (startup, resync)."""
    k = kube()
    CACHE.replace("nodes", k.list_nodes())
    CACHE.replace("pods", k.list_pods())
    CACHE.replace("jobs", k.list_owned_jobs())
    CACHE.replace("generativejobs", k.list_generativejobs())
    CACHE.replace("policies", k.list_policies())
    CACHE.replace("rayservices", k.list_owned_rayservices())
    try:
        CACHE.replace("priorityclasses", k.list_priorityclasses())
    except Exception as exc:  # no RBAC for it: priorities come from spec.priority only
        log.warning("PriorityClasses not listed: %s", bounded(exc, 200))
    CACHE.primed.set()


class Loop:
    def __init__(self, elector: LeaderElector, period: float = 2.0, resync: float = 30.0, workers: int = 8) -> None:
        self.elector, self.period, self.resync = elector, period, resync
        self.scheduler = Scheduler(elector.may_write, workers)
        self.waiting: dict[str, WaitingJob] = {}
        self._steps: dict[str, Step] = {}  # this iteration's passes' status changes, written with the decision
        self._backlog: dict[str, None] = {}  # jobs due a pass, in the order they became due
        self._due: list[tuple[float, str]] = []  # (monotonic time, key): passes asked for later
        self._failures: dict[str, int] = {}
        self._forgotten: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gensched-pass")
        self._stop = threading.Event()
        self.heartbeat = time.monotonic()
        self.last_progress = time.monotonic()
        self._last_resync = time.monotonic()
        self.cycles = 0
        self.thread: threading.Thread | None = None
        elector.on_change.append(self._leadership)

    def _leadership(self, leader: bool) -> None:
        telemetry.call("set_leader", elector_identity(self.elector), leader)
        if leader:
            CACHE.mark_all()  # a new leader looks at everything once

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="gensched-loop", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        CACHE.wake.set()

    def run(self) -> None:
        while not self._stop.is_set():
            CACHE.wake.wait(timeout=self._sleep())
            CACHE.wake.clear()
            self.heartbeat = time.monotonic()
            if not self.elector.is_leader():
                self.last_progress = time.monotonic()  # a standby makes progress by waiting
                continue
            try:
                self.iteration()
                self.last_progress = time.monotonic()
            except Exception as exc:
                log.warning("loop iteration failed: %s", bounded(exc, 500), exc_info=not _api_error(exc))
                time.sleep(RETRY_MIN_S)

    def _sleep(self) -> float:
        wait = self.period
        if self._due:
            wait = min(wait, max(0.0, self._due[0][0] - time.monotonic()))
        return max(0.05, wait)

    def iteration(self) -> None:
        if time.monotonic() - self._last_resync >= self.resync:
            relist()
            CACHE.mark_all()
            self._last_resync = time.monotonic()
        _, _, period = settings_from_policies()
        self.period = period
        self.scheduler.settle()
        pic = picture.build(CACHE, self.scheduler.assumed)
        RESERVATIONS.load(pic.state)
        for key in CACHE.take_dirty():
            self._backlog[key] = None
        t = time.monotonic()
        while self._due and self._due[0][0] <= t:
            self._backlog[heapq.heappop(self._due)[1]] = None
        keys = list(itertools.islice(self._backlog, PASS_BATCH))  # oldest first
        for key in keys:
            del self._backlog[key]
        if self._backlog:
            CACHE.wake.set()  # more passes are waiting: the next iteration starts at once
        serve, batch = [], []
        for key in keys:
            body = CACHE.get("generativejobs", key)
            if body is None:
                if self.waiting.pop(key, None) is not None or key not in self._forgotten:
                    ns, _, name = key.partition("/")
                    telemetry.call("forget_job", ns, name)
                    policy_status.retire_job(key)  # its use stays counted in its namespace's budget
                    self._forgotten.add(key)
                continue
            self._forgotten.discard(key)
            (serve if (body.get("spec") or {}).get("mode") == "Serve" else batch).append(body)
        # Serve jobs place their workers on the picture directly, and carbon-aware plans bind each other in
        # decision order: those passes run one at a time; the others run in parallel.
        ordered = [b for b in batch if _plans_with_others(b)]
        for body in serve + sorted(ordered, key=_decision_order):
            self._pass(body)
        for _ in self._pool.map(self._pass, [b for b in batch if not _plans_with_others(b)]):
            pass
        self._orphans(pic)
        policy_status.tick(self.elector.may_write)  # at most every ~10 s: policy status, namespace budgets
        steps, self._steps = self._steps, {}
        if self.waiting and self.elector.may_write():
            pic = picture.build(CACHE, self.scheduler.assumed)  # passes may have released or evicted work
            RESERVATIONS.load(pic.state)
            self.scheduler.cycle(pic, list(self.waiting.values()), steps)
            self.cycles += 1
        elif steps:  # no cycle (leadership lapsed): the passes' changes are not written; look again later
            CACHE.mark(*steps)
        s = RESERVATIONS.state
        by_model: dict[str, list[float]] = {}
        for i, n in enumerate(s.nodes):
            cap = by_model.setdefault(n.gpu_model, [0.0, 0.0])
            cap[0] += int(s.gpu_count[i])
            cap[1] += (int(s.gpu_count[i]) * 1000 - int(s.gpu_free[i].sum())) / 1000
        telemetry.call("update_cluster", s.allocated_milli(), s.total_milli(), s.fragmentation(), len(s.index),
                       {m: (c, a) for m, (c, a) in by_model.items()})

    def _pass(self, body: dict) -> None:
        key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
        if not self.elector.may_write():
            CACHE.mark(key)
            return
        try:
            out = reconcile(body)
            self._failures.pop(key, None)
        except Exception as exc:
            n = self._failures.get(key, 0) + 1
            self._failures[key] = n
            delay = min(RETRY_MAX_S, RETRY_MIN_S * 2 ** (n - 1))
            log.warning("%s: pass failed (retry in %.1f s): %s", key, delay, bounded(exc, 500),
                        exc_info=not _api_error(exc))
            out = Outcome(requeue_s=delay)
        if out.waiting is not None:
            self.waiting[key] = out.waiting
            if out.step is not None and (out.step.changes() or out.step.events):
                self._steps[key] = out.step
        else:
            self.waiting.pop(key, None)
        if out.requeue_s is not None:
            heapq.heappush(self._due, (time.monotonic() + out.requeue_s, key))

    def _orphans(self, pic: picture.Picture) -> None:
        """Released Jobs whose GenerativeJob is gone: delete them (their pods go with them)."""
        for job in pic.orphans:
            meta = job["metadata"]
            if not self.elector.may_write():
                return
            try:
                kube().delete_job(meta["namespace"], meta["name"])
                log.info("deleted Job %s/%s: its GenerativeJob is gone", meta["namespace"], meta["name"])
            except Exception as exc:
                log.warning("orphan Job %s/%s not deleted: %s", meta["namespace"], meta["name"], bounded(exc, 200))

    def healthy(self, stale_after: float = 60.0) -> bool:
        """Liveness: the loop thread is alive and has made progress recently."""
        alive = self.thread is not None and self.thread.is_alive()
        return alive and time.monotonic() - self.last_progress < stale_after


def _plans_with_others(body: dict) -> bool:
    """Does this job's timing plan depend on other jobs' plans (CarbonAware's capacity-aware plans)?"""
    from gensched.api.policy import TimingMode
    from gensched.controller.lifecycle import resolve_policy

    if (body.get("status") or {}).get("phase") not in (None, "Pending", "Deferred"):
        return False
    try:
        _, policy = resolve_policy((body.get("spec") or {}).get("policyRef"))
    except LookupError:
        return False
    return policy.timing.mode == TimingMode.CARBON_AWARE


def _decision_order(body: dict) -> tuple:
    st = body.get("status") or {}
    return (st.get("decidedAt") or "~", body["metadata"].get("creationTimestamp") or "", body["metadata"]["name"])


def _api_error(exc: BaseException) -> bool:
    import urllib3

    from gensched.controller.kube import ApiException

    return isinstance(exc, ApiException | urllib3.exceptions.HTTPError | OSError | TimeoutError)


def elector_identity(e: LeaderElector) -> str:
    return e.identity
