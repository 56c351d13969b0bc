"""One scheduling cycle over a snapshot, in kube-scheduler's framework order.

QueueSort (priority, latest safe start, age) -> per job: quota check -> Filter (taints, cordons,
nodes held for others) -> Score and Reserve (the packing policy) -> on failure PostFilter:
preempt lower-priority interruptible work, or defragment by moving interruptible work, or hold the
node where the head job fits soonest (EASY backfill: later jobs may only use that node if they end
before the head job's reserved start).

Nothing here talks to Kubernetes: the operator builds the snapshot from its watch caches and applies
the decisions; the simulator does the same on a trace, so both run this code.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from gensched.packing import Allocation, Placer
from gensched.packing.policies import explain_unschedulable
from gensched.sched.capacity import allowed_rows, capable, earliest_start, ends_before, never_fits
from gensched.sched.eviction import Plan, fits_after, lost_work, plan_moves, plan_preemption
from gensched.sched.model import (
    Backfill,
    CycleResult,
    Evict,
    HeadReservation,
    Place,
    RunningJob,
    Snapshot,
    Wait,
    WaitingJob,
    WaitReason,
)
from gensched.sched.queue import order
from gensched.sched.quota import QuotaBook


def _shape(job: WaitingJob) -> tuple:
    r = job.request
    return (r.whole_gpus, r.gpu_milli, round(r.gpu_memory_gib, 3), r.cpu_milli, r.memory_mib, r.gpu_models,
            job.tolerations, job.strategy)


def _when(t: float, now: float) -> str:
    if math.isinf(t):
        return "when running work there ends (no estimated end)"
    return f"in about {max(0.0, t - now):.0f} s"


class _Cycle:
    def __init__(self, snap: Snapshot, placer_for: Callable[[str], Placer]) -> None:
        self.snap, self.state, self.cfg, self.now = snap, snap.state, snap.settings, snap.now
        self.placer_for = placer_for
        self.out = CycleResult()
        self.book = QuotaBook(snap.quotas, snap.running)
        self.by_row: dict[int, list[RunningJob]] = defaultdict(list)
        self.running = {r.key: r for r in snap.running}
        for r in snap.running:
            row = self.state.index.get(r.alloc.node)
            if row is not None:
                self.by_row[row].append(r)
        self.nominated: dict[int, str] = {}  # row -> the waiting job it is held for
        for j in snap.waiting:
            row = self.state.index.get(j.nominated_node or "")
            if row is not None:
                self.nominated.setdefault(row, j.key)
        self.allowed: dict[tuple, np.ndarray] = {}
        self.capable: dict[tuple, np.ndarray] = {}
        self.failed: set[tuple] = set()
        self.taken: set[str] = set()  # evicted this cycle
        self.preempt_budget = self.cfg.max_preemptions if self.cfg.preemption else 0
        self.move_budget = self.cfg.max_moves if self.cfg.defragmentation else 0
        self.tried = 0

    # -- helpers
    def _allowed(self, job: WaitingJob) -> np.ndarray:
        if job.tolerations not in self.allowed:
            self.allowed[job.tolerations] = allowed_rows(self.state, self.snap.taints, job.tolerations)
        return self.allowed[job.tolerations]

    def _capable(self, job: WaitingJob) -> np.ndarray:
        key = _shape(job)
        if key not in self.capable:
            self.capable[key] = capable(self.state, job.request) & self._allowed(job)
        return self.capable[key]

    def _blocked_for(self, job: WaitingJob) -> np.ndarray:
        block = ~self._allowed(job)
        for row, owner in self.nominated.items():
            if owner != job.key:
                block[row] = True
        head = self.out.head
        if (head is not None and head.key != job.key and self.cfg.backfill == Backfill.EASY
                and not ends_before(job.duration_s, self.now, head.start)):
            block[self.state.index[head.node]] = True
        return block

    def _wait(self, job: WaitingJob, pos: int, reason: WaitReason, message: str, node: str | None = None) -> None:
        self.out.waiting.append(Wait(job.key, reason, message, pos, node))

    def _evict(self, job: WaitingJob, plan: Plan, reason: str) -> str:
        node = self.state.node_at(plan.row).name
        for v in plan.victims:
            self.taken.add(v.key)
            lost = lost_work(v, self.now, self.cfg.checkpoint_s)
            self.out.evictions.append(Evict(v.key, job.key, reason, node, lost))
        self.nominated[plan.row] = job.key
        return node

    # -- the cycle
    def run(self) -> CycleResult:
        queue = order(self.snap.waiting, self.cfg.priority)
        self.out.order = [j.key for j in queue]
        for pos, job in enumerate(queue, 1):
            self._one(job, pos)
        self.state.mask(None)
        return self.out

    def _one(self, job: WaitingJob, pos: int) -> None:
        st, req = self.state, job.request
        never = never_fits(st, req, self._allowed(job)) or self.book.never(job)
        if never:
            self._wait(job, pos, WaitReason.NEVER_FITS, never)
            return
        head = self.out.head
        if head is not None and self.cfg.backfill == Backfill.NONE:
            self._wait(job, pos, WaitReason.BEHIND_HEAD, f"queued behind {head.key} (strict FIFO)")
            return
        why = self.book.check(job)
        if why:
            self._wait(job, pos, WaitReason.QUOTA, why)
            return
        block = self._blocked_for(job)
        shape = (_shape(job), hash(block.tobytes()))
        outcome = None
        if shape not in self.failed and self.tried < self.cfg.scan_limit:
            st.mask(block)
            outcome = self.placer_for(job.strategy).place(st, req)
            st.mask(None)
        if isinstance(outcome, Allocation):
            st.reserve(outcome)
            self.book.admit(job)
            self.nominated = {r: k for r, k in self.nominated.items() if k != job.key}
            self.out.placed.append(Place(job.key, outcome, backfill=head is not None))
            return
        if outcome is not None:
            self.tried += 1
        self.failed.add(shape)
        if self._held_for(job, pos):
            return
        if self._make_room(job, pos, block):
            return
        if head is None and self.cfg.backfill != Backfill.UNRESTRICTED:
            rows = np.flatnonzero(self._capable(job) & ~block & ~st.cordoned)
            found = earliest_start(st, req, rows, self.by_row, self.now)
            if found is not None:
                node = st.node_at(found[0]).name
                self.out.head = HeadReservation(job.key, node, found[1])
                self._wait(job, pos, WaitReason.UNSCHEDULABLE,
                           f"first in line: node {node} is held for it and should have room "
                           f"{_when(found[1], self.now)}")
                return
        if head is not None and self.cfg.backfill == Backfill.EASY:
            st.mask(~self._allowed(job))
            fits_elsewhere = bool(st.feasible(req).any())
            st.mask(None)
            if fits_elsewhere:
                self._wait(job, pos, WaitReason.BEHIND_HEAD,
                           f"fits only on node {head.node}, held for {head.key}; it runs longer than the head job's "
                           "wait (set batch.estimatedDuration to let it backfill)")
                return
        self._wait(job, pos, WaitReason.UNSCHEDULABLE, explain_unschedulable(st, req))

    def _held_for(self, job: WaitingJob, pos: int) -> bool:
        """A job whose nominated node still has its leaving work on it keeps waiting for it."""
        row = self.state.index.get(job.nominated_node or "")
        if row is None or self.nominated.get(row) != job.key:
            return False
        leaving = [j for j in self.by_row.get(row, []) if j.evicting]
        if not leaving or not fits_after(self.state, row, job.request, leaving):
            del self.nominated[row]  # nothing will come back there: plan afresh
            return False
        self._wait(job, pos, WaitReason.PREEMPTING, f"waiting for {len(leaving)} suspended job(s) to leave node "
                   f"{job.nominated_node}", job.nominated_node)
        if self.out.head is None:
            self.out.head = HeadReservation(job.key, job.nominated_node or "", self.now)
        return True

    def _make_room(self, job: WaitingJob, pos: int, block: np.ndarray) -> bool:
        st = self.state
        rows = np.flatnonzero(self._capable(job) & ~block & ~st.cordoned)
        if self.preempt_budget > 0 and self.cfg.priority:
            plan = plan_preemption(st, job.request, job.priority, rows, self.by_row, self.taken, self.now,
                                   self.cfg.checkpoint_s, self.preempt_budget)
            if plan is not None:
                self.preempt_budget -= len(plan.victims)
                node = self._evict(job, plan, "Preempted")
                names = ", ".join(v.key for v in plan.victims)
                self._wait(job, pos, WaitReason.PREEMPTING, f"suspending lower-priority {names} on node {node}", node)
                if self.out.head is None:
                    self.out.head = HeadReservation(job.key, node, self.now)
                return True
        if self.move_budget > 0 and self.out.head is None:
            plan = plan_moves(st, job.request, job.priority, rows, self.by_row, self.taken, self.now,
                              self.cfg.checkpoint_s, self.move_budget, self._placer_of_running,
                              self._blocked_for(job) | self._nominated_mask())
            if plan is not None:
                self.move_budget -= len(plan.victims)
                node = self._evict(job, plan, "Defragment")
                names = ", ".join(v.key for v in plan.victims)
                self._wait(job, pos, WaitReason.DEFRAGMENTING, f"moving {names} off node {node} to make room", node)
                self.out.head = HeadReservation(job.key, node, self.now)
                return True
        return False

    def _nominated_mask(self) -> np.ndarray:
        mask = np.zeros(len(self.state.index), dtype=bool)
        for row in self.nominated:
            mask[row] = True
        return mask

    def _placer_of_running(self, job: RunningJob) -> Placer:
        return self.placer_for(job.strategy)


def schedule(snap: Snapshot, placer_for: Callable[[str], Placer]) -> CycleResult:
    """Run one cycle: the decisions, with placements already reserved on ``snap.state``.

    ``placer_for(strategy)`` returns the packing policy by name (callers cache them: FGD keeps
    per-node work between decisions).
    """
    return _Cycle(snap, placer_for).run()
