"""One scheduling cycle over a snapshot, in kube-scheduler's framework order.

QueueSort (priority, latest safe start, age) -> per job: quota check -> Filter (taints, cordons,
nodes held for others) -> Score and Reserve (the packing policy) -> on failure PostFilter:
preempt lower-priority interruptible work, or defragment by moving interruptible work, or hold the
node where the head job fits soonest (EASY backfill: later jobs may only use that node if they end
before the head job's reserved start; ``Settings.reservations`` > 1 holds a node for as many blocked
jobs, each on its own node).

Nothing here talks to Kubernetes: the operator builds the snapshot from its watch caches and applies
the decisions; the simulator does the same on a trace, so both run this code.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from weakref import WeakKeyDictionary

import numpy as np

from gensched.packing import Allocation, ClusterState, Placer
from gensched.packing.policies import explain_unschedulable
from gensched.sched.capacity import allowed_rows, capable, earliest_start, ends_before, never_fits
from gensched.sched.eviction import Plan, RowIndex, fits_after, lost_work, plan_moves, plan_preemption
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
    return (r.whole_gpus, r.gpu_milli, r.gpu_memory_gib, r.cpu_milli, r.memory_mib, r.gpu_models,
            job.tolerations, job.strategy)


# What depends only on a cluster picture's nodes (sizes, models, cordons) and the taints: whether a shape
# could ever fit, and on which nodes when empty. Kept per ClusterState across cycles (a picture's nodes
# never change; the operator builds a new picture on node churn, which drops its entry).
_STATIC: WeakKeyDictionary[ClusterState, dict[tuple, object]] = WeakKeyDictionary()
STATIC_ENTRIES = 20_000


def _dims(req) -> tuple[int, int, float, int, int]:
    """What a request needs, per dimension: GPUs, milli per GPU, GiB per GPU, CPU, memory."""
    return (req.gpu_count, req.per_gpu_milli if not req.cpu_only else 0, req.gpu_memory_gib, req.cpu_milli,
            req.memory_mib)


def _covers(small: tuple, big: tuple) -> bool:
    return all(a <= b for a, b in zip(small, big, strict=True))


class _ByRow:
    """Running jobs per row, read off the caller's per-node index (``Snapshot.running_by_node``)."""

    def __init__(self, state, by_node: Mapping[str, Iterable[RunningJob]]) -> None:
        self.state, self.by_node = state, by_node

    def get(self, row: int, default: Iterable[RunningJob] = (), /) -> Iterable[RunningJob]:
        got = self.by_node.get(self.state.node_at(row).name)
        return default if got is None else got


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
        self._by_row: RowIndex | None = None
        if snap.running_by_node is not None:
            self._by_row = _ByRow(self.state, snap.running_by_node)
        self.nominated: dict[int, str] = {}  # row -> the waiting job it is held for
        for j in snap.waiting:
            row = self.state.index.get(j.nominated_node or "")
            if row is not None:
                self.nominated.setdefault(row, j.key)
        self.allowed: dict[tuple, np.ndarray] = {}
        self.static = _STATIC.setdefault(self.state, {})
        if len(self.static) > STATIC_ENTRIES:  # shapes or taints that came and went
            self.static.clear()
        self.static_sig = (hash(self.state.cordoned.tobytes()), tuple(sorted(snap.taints.items())))
        # per-cycle memos: the picture only fills up within a cycle (placements reserve, evicted work
        # keeps its GPUs until it leaves), so what failed once fails again for the same or a larger need
        self.failed: dict[tuple, list[tuple]] = defaultdict(list)  # (models, block) -> needs that found no node
        self.no_room: set[tuple] = set()  # (shape, priority, block): no preemption or move plan
        self.fails: dict[tuple, bool] = {}  # (models, block, need) -> no node passes the filter
        self.outcomes: dict[tuple, tuple] = {}  # (shape, priority, block, picture version) -> its Wait
        self.elsewhere: dict[tuple, bool] = {}
        self._owners: tuple[int, dict[str, tuple[int, ...]]] = (-1, {})
        self.held_rows: set[int] = set()  # nodes reserved for blocked jobs this cycle
        self._kth: tuple[int, np.ndarray] = (-1, np.empty(0))
        self.blocks: dict[tuple, np.ndarray] = {}
        self.bver = 0  # bumped when nominated nodes or the head change (the blocks they make)
        self._lowest: float | None = None  # lowest priority of any interruptible running job
        self.taken: set[str] = set()  # evicted this cycle
        self.preempt_budget = self.cfg.max_preemptions if self.cfg.preemption else 0
        self.move_budget = self.cfg.max_moves if self.cfg.defragmentation else 0
        self.tried = 0

    @property
    def by_row(self) -> RowIndex:
        """Running jobs per row, indexed on first use (many cycles never need it)."""
        if self._by_row is None:
            rows: dict[int, list[RunningJob]] = defaultdict(list)
            for r in self.snap.running:
                row = self.state.index.get(r.alloc.node)
                if row is not None:
                    rows[row].append(r)
            self._by_row = rows
        return self._by_row

    # -- helpers
    def _allowed(self, job: WaitingJob) -> np.ndarray:
        if job.tolerations not in self.allowed:
            self.allowed[job.tolerations] = allowed_rows(self.state, self.snap.taints, job.tolerations)
        return self.allowed[job.tolerations]

    def _capable(self, job: WaitingJob, shape: tuple) -> np.ndarray:
        key = ("capable", shape[:-1], self.static_sig)
        if key not in self.static:
            self.static[key] = capable(self.state, job.request) & self._allowed(job)
        return self.static[key]  # type: ignore[return-value]

    def _never(self, job: WaitingJob, shape: tuple) -> str | None:
        key = ("never", shape[:-1], self.static_sig)
        if key not in self.static:
            self.static[key] = never_fits(self.state, job.request, self._allowed(job))
        return self.static[key] or self.book.never(job)  # type: ignore[return-value]

    def _explain(self, job: WaitingJob, shape: tuple) -> str:
        key = ("explain", shape[:-1])
        if key not in self.static:  # depends only on the nodes and the request
            self.static[key] = explain_unschedulable(self.state, job.request)
        return self.static[key]  # type: ignore[return-value]

    def _set_head(self, head: HeadReservation) -> None:
        """Hold a node for a blocked job: the first is the head job (EASY), more with Settings.reservations."""
        if self.out.head is None:
            self.out.head = head
        self.out.reservations.append(head)
        if head.node in self.state.index:
            self.held_rows.add(self.state.index[head.node])
        self.bver += 1

    def _nominate(self, row: int, key: str | None) -> None:
        if key is None:
            self.nominated.pop(row, None)
        else:
            self.nominated[row] = key
        self.bver += 1

    def _owned(self, key: str) -> tuple[int, ...]:
        if self._owners[0] != self.bver:
            owners: dict[str, tuple[int, ...]] = {}
            for r, k in self.nominated.items():
                owners[k] = (*owners.get(k, ()), r)
            self._owners = (self.bver, owners)
        return self._owners[1].get(key, ())

    def _block_key(self, job: WaitingJob) -> tuple:
        owned = self._owned(job.key) if self.nominated else ()
        past = ()  # per held node: would the job still run at that reservation's start (so must keep off)?
        if self.out.reservations and self.cfg.backfill == Backfill.EASY:
            # a reservation with no known start (running work there has no estimated end) holds nothing:
            # keeping the node idle for an unknown time would waste it and promise the head nothing
            past = tuple(r.key != job.key and not math.isinf(r.start)
                         and not ends_before(job.duration_s, self.now, r.start)
                         for r in self.out.reservations)
        return (job.tolerations, owned, past, self.bver)

    def _blocked_for(self, job: WaitingJob, bkey: tuple | None = None) -> np.ndarray:
        """Rows ``job`` may not use now: taints, nodes held for others, reserved nodes it would not leave in
        time (EASY)."""
        bkey = bkey or self._block_key(job)
        if bkey not in self.blocks:
            block = ~self._allowed(job)
            for row, owner in self.nominated.items():
                if owner != job.key:
                    block[row] = True
            for r, keep_off in zip(self.out.reservations, bkey[2], strict=False):  # () unless EASY
                if keep_off and r.node in self.state.index:
                    block[self.state.index[r.node]] = True
            self.blocks[bkey] = block
        return self.blocks[bkey]

    def _wait(self, job: WaitingJob, pos: int, reason: WaitReason, message: str, node: str | None = None) -> None:
        self.out.waiting.append(Wait(job.key, reason, message, pos, node))

    def _evict(self, job: WaitingJob, plan: Plan, reason: str) -> str:
        node = self.state.node_at(plan.row).name
        for v in plan.victims:
            self.taken.add(v.key)
            lost = lost_work(v, self.now, self.cfg.checkpoint_s)
            self.out.evictions.append(Evict(v.key, job.key, reason, node, lost))
        self._nominate(plan.row, job.key)
        return node

    def _any_fits(self, req, block: np.ndarray) -> bool:
        """``state.feasible(req).any()`` with ``block`` masked. On unpartitioned GPUs and without a GPU-memory
        or model ask (the trace's case) it reads a per-picture-version table of each node's k-th largest
        free share: a node has k GPUs with m free iff its k-th largest free is at least m."""
        st = self.state
        if st.any_mig or req.gpu_memory_gib > 0 or req.gpu_models:
            st.mask(block)
            ok = bool(st.feasible(req).any())
            st.mask(None)
            return ok
        if self._kth[0] != st.version:
            self._kth = (st.version, -np.sort(-st.gpu_free, axis=1))
        ok = (st.cpu_free >= req.cpu_milli) & (st.mem_free >= req.memory_mib) & ~block & ~st.cordoned
        if not req.cpu_only:
            ok &= self._kth[1][:, req.gpu_count - 1] >= req.per_gpu_milli
        return bool(ok.any())

    def _lowest_victim_priority(self) -> float:
        if self._lowest is None:
            self._lowest = min((r.priority for r in self.snap.running if r.interruptible and not r.evicting),
                               default=math.inf)
        return self._lowest

    # -- the cycle
    def run(self) -> CycleResult:
        queue = order(self.snap.waiting, self.cfg.priority)
        self.out.order = [j.key for j in queue]
        for pos, job in enumerate(queue, 1):
            self._one(job, pos)
        self.state.mask(None)
        return self.out

    def _one(self, job: WaitingJob, pos: int) -> None:
        st = self.state
        shape = _shape(job)
        never = self._never(job, shape)
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
        bkey = self._block_key(job)
        # A job like one already decided (same shape, priority and blocked nodes, picture unchanged since,
        # no node nominated for it) is decided alike: it waits for the same reason. Nothing it would try
        # could go otherwise (what failed fails again as the picture fills, and budgets only shrink).
        fast = None if job.nominated_node else (shape, job.priority, bkey, st.version)
        if fast is not None and fast in self.outcomes:
            reason, message, node = self.outcomes[fast]
            self.out.waiting.append(Wait(job.key, reason, message, pos, node))
            return
        marks = (self.bver, st.version, len(self.out.evictions), len(self.out.waiting))
        self._decide(job, pos, shape, bkey)
        if fast is not None and marks == (self.bver, st.version, len(self.out.evictions),
                                          len(self.out.waiting) - 1):
            w = self.out.waiting[-1]
            self.outcomes[fast] = (w.reason, w.message, w.nominated_node)

    def _decide(self, job: WaitingJob, pos: int, shape: tuple, bkey: tuple) -> None:
        st, req, head = self.state, job.request, self.out.head
        block = self._blocked_for(job, bkey)
        # placers fail only when no node passes the filter, so a need at least as large as one that
        # found no node (same models, same blocked nodes) finds none either: skip the attempt
        fkey = (req.gpu_models, bkey)
        need = _dims(req)
        known = self.fails.get((fkey, need))
        if known is None:
            known = self.fails[(fkey, need)] = any(_covers(small, need) for small in self.failed.get(fkey, ()))
        if known:
            outcome = None
        elif self.tried >= self.cfg.scan_limit:
            self._wait(job, pos, WaitReason.UNSCHEDULABLE, f"not examined this cycle: {self.tried} blocked jobs "
                       "were tried first (scan limit); it keeps its place")
            return
        else:
            # Filter first: score only when some node passes (a placer's own failure explains itself at length)
            outcome = None
            if self._any_fits(req, block):
                st.mask(block)
                outcome = self.placer_for(job.strategy).place(st, req)
                st.mask(None)
            if isinstance(outcome, Allocation):
                st.reserve(outcome)
                self.book.admit(job)
                for row in bkey[1]:
                    self._nominate(row, None)
                self.out.placed.append(Place(job.key, outcome, backfill=head is not None))
                return
            self.tried += 1
            # keep the smallest needs that failed (a larger one that failed adds nothing)
            self.failed[fkey] = [f for f in self.failed[fkey] if not _covers(need, f)] + [need]
            self.fails[(fkey, need)] = True
        if self._held_for(job, pos):
            return
        if self._make_room(job, pos, block, (shape, job.priority, bkey)):
            return
        held = len(self.out.reservations)
        if (held == 0 or (held < self.cfg.reservations and self.cfg.backfill == Backfill.EASY)) \
                and self.cfg.backfill != Backfill.UNRESTRICTED:
            free = self._capable(job, shape) & ~block & ~st.cordoned
            free[list(self.held_rows)] = False  # one reservation per node
            found = earliest_start(st, req, np.flatnonzero(free), self.by_row, self.now)
            if found is not None:
                node = st.node_at(found[0]).name
                self._set_head(HeadReservation(job.key, node, found[1]))
                first = "first in line" if held == 0 else f"reservation {held + 1} of {self.cfg.reservations}"
                held_how = ("is its first choice (not held: no estimated end there, so jobs behind it may use"
                            " it meanwhile)" if math.isinf(found[1]) else "is held for it")
                self._wait(job, pos, WaitReason.UNSCHEDULABLE,
                           f"{first}: node {node} {held_how} and should have room {_when(found[1], self.now)}")
                return
        if head is not None and self.cfg.backfill == Backfill.EASY:
            # does it fit on a node it may not use (held for the head or for another job)? A no stays a
            # no as the picture fills; a yes holds only until the next placement
            fits = self.elsewhere.get((shape, None))
            if fits is None:
                fits = self.elsewhere.get((shape, st.version))
            if fits is None:
                fits = self._any_fits(req, ~self._allowed(job))
                self.elsewhere[(shape, st.version if fits else None)] = fits
            if fits:
                where = (f"node {head.node}, held for {head.key}" if len(self.out.reservations) == 1 else
                         "nodes held for earlier jobs")
                self._wait(job, pos, WaitReason.BEHIND_HEAD,
                           f"fits only on {where}; it runs longer than the head job's wait (set "
                           "batch.estimatedDuration to let it backfill)")
                return
        self._wait(job, pos, WaitReason.UNSCHEDULABLE, self._explain(job, shape))

    def _held_for(self, job: WaitingJob, pos: int) -> bool:
        """A job whose nominated node still has its leaving work on it keeps waiting for it."""
        row = self.state.index.get(job.nominated_node or "")
        if row is None or self.nominated.get(row) != job.key:
            return False
        leaving = [j for j in self.by_row.get(row, []) if j.evicting]
        if not leaving or not fits_after(self.state, row, job.request, leaving):
            self._nominate(row, None)  # nothing will come back there: plan afresh
            return False
        self._wait(job, pos, WaitReason.PREEMPTING, f"waiting for {len(leaving)} suspended job(s) to leave node "
                   f"{job.nominated_node}", job.nominated_node)
        if self.out.head is None:
            self._set_head(HeadReservation(job.key, job.nominated_node or "", self.now))
        return True

    def _make_room(self, job: WaitingJob, pos: int, block: np.ndarray, memo: tuple) -> bool:
        preempt = self.preempt_budget > 0 and self.cfg.priority
        move = self.move_budget > 0 and self.out.head is None
        if not (preempt or move) or memo in self.no_room:
            return False
        preempt = preempt and self._lowest_victim_priority() < job.priority  # anyone to preempt at all?
        if not (preempt or move):
            return False
        st = self.state
        rows = np.flatnonzero(self._capable(job, memo[0]) & ~block & ~st.cordoned)
        if preempt:
            plan = plan_preemption(st, job.request, job.priority, rows, self.by_row, self.taken, self.now,
                                   self.cfg.checkpoint_s, self.preempt_budget)
            if plan is not None:
                self.preempt_budget -= len(plan.victims)
                node = self._evict(job, plan, "Preempted")
                names = ", ".join(v.key for v in plan.victims)
                self._wait(job, pos, WaitReason.PREEMPTING, f"suspending lower-priority {names} on node {node}", node)
                if self.out.head is None:
                    self._set_head(HeadReservation(job.key, node, self.now))
                return True
        if move:
            plan = plan_moves(st, job.request, job.priority, rows, self.by_row, self.taken, self.now,
                              self.cfg.checkpoint_s, self.move_budget, self._placer_of_running,
                              self._blocked_for(job) | self._nominated_mask())
            if plan is not None:
                self.move_budget -= len(plan.victims)
                node = self._evict(job, plan, "Defragment")
                names = ", ".join(v.key for v in plan.victims)
                self._wait(job, pos, WaitReason.DEFRAGMENTING, f"moving {names} off node {node} to make room", node)
                self._set_head(HeadReservation(job.key, node, self.now))
                return True
        self.no_room.add(memo)  # no plan: not planned again this cycle for the same need and blocks
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
