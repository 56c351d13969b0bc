"""Making room: preempt lower-priority interruptible jobs, or move interruptible jobs to defragment.

Both pick, per candidate node, the smallest set of jobs whose GPUs would let the waiting job fit
there, and choose the cheapest node. Only interruptible batch jobs are ever touched (they checkpoint
on SIGTERM and resume); a move is planned only when every moved job fits elsewhere right now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gensched.packing import Allocation, ClusterState, GpuRequest, Placer
from gensched.sched.model import RunningJob

CANDIDATES = 32  # nodes examined per plan


class RowIndex(Protocol):
    """Running jobs per cluster-picture row (a dict, or the cycle's view of the caller's index)."""

    def get(self, row: int, default: Iterable[RunningJob] = ..., /) -> Iterable[RunningJob]: ...


@dataclass(frozen=True)
class Plan:
    row: int
    victims: tuple[RunningJob, ...]


def lost_work(job: RunningJob, now: float, checkpoint_s: float | None) -> float:
    """Seconds of work since the job's last checkpoint (what suspending it now throws away)."""
    if job.checkpoint_at is not None:
        return max(0.0, now - job.checkpoint_at)
    ran = max(0.0, now - job.started_at)
    return ran % checkpoint_s if checkpoint_s else ran


def _free_with(state: ClusterState, row: int, jobs: list[RunningJob]) -> tuple:
    free, memf = state.gpu_free[row].copy(), state.gpu_mem_free[row].copy()
    cpu, mem = int(state.cpu_free[row]), int(state.mem_free[row])
    for r in jobs:
        a = r.alloc
        if a.gpu_indices:
            idx = list(a.gpu_indices)
            free[idx] += a.gpu_milli
            memf[idx] += a.gpu_memory_gib
        cpu, mem = cpu + a.cpu_milli, mem + a.memory_mib
    return free, memf, cpu, mem


def fits_after(state: ClusterState, row: int, req: GpuRequest, leaving: list[RunningJob]) -> bool:
    return state.fits_node(row, req, *_free_with(state, row, leaving))


def smallest_set(state: ClusterState, row: int, req: GpuRequest, candidates: list[RunningJob],
                 leaving: list[RunningJob]) -> list[RunningJob] | None:
    """Fewest of ``candidates`` (taken in the given order, then pruned) that make ``req`` fit ``row``,
    given that ``leaving`` jobs go anyway; None if all of them are not enough."""
    chosen: list[RunningJob] = []
    for c in candidates:
        if fits_after(state, row, req, leaving + chosen):
            break
        chosen.append(c)
    if not fits_after(state, row, req, leaving + chosen):
        return None
    for c in reversed(list(chosen)):  # drop any that turned out not to be needed
        rest = [x for x in chosen if x is not c]
        if fits_after(state, row, req, leaving + rest):
            chosen = rest
    return chosen


def _rows(state: ClusterState, rows: np.ndarray, by_row: RowIndex,
          pick: Callable[[RunningJob], bool]) -> list[int]:
    """Up to CANDIDATES nodes with a job ``pick`` accepts, most free GPU first (then row order).

    Walks the nodes in that order and stops at CANDIDATES, so a plan reads only the nodes it needs."""
    rows = np.asarray(rows)
    ranked = rows[np.argsort(-state.gpu_free[rows].sum(axis=1), kind="stable")]
    out: list[int] = []
    for r in map(int, ranked):
        if any(pick(j) for j in by_row.get(r, ())):
            out.append(r)
            if len(out) == CANDIDATES:
                break
    return out


def plan_preemption(state: ClusterState, req: GpuRequest, priority: int, rows: np.ndarray,
                    by_row: RowIndex, taken: set[str], now: float,
                    checkpoint_s: float | None, budget: int) -> Plan | None:
    """Suspend the fewest, lowest-priority, least-progressed-since-checkpoint interruptible jobs of
    lower priority on one node so that ``req`` fits there."""
    def victim(j: RunningJob) -> bool:
        return j.interruptible and not j.evicting and j.priority < priority and j.key not in taken

    best: tuple[tuple, Plan] | None = None
    for row in _rows(state, rows, by_row, victim):
        jobs = by_row.get(row, [])
        leaving = [j for j in jobs if j.evicting]
        cands = sorted((j for j in jobs if victim(j)),
                       key=lambda j: (j.priority, lost_work(j, now, checkpoint_s), -j.started_at, j.key))
        chosen = smallest_set(state, row, req, cands, leaving)
        if not chosen or len(chosen) > budget:
            continue
        cost = (len(chosen), max(j.priority for j in chosen), sum(lost_work(j, now, checkpoint_s) for j in chosen))
        if best is None or cost < best[0]:
            best = (cost, Plan(row, tuple(chosen)))
    return best[1] if best else None


def plan_moves(state: ClusterState, req: GpuRequest, priority: int, rows: np.ndarray,
               by_row: RowIndex, taken: set[str], now: float, checkpoint_s: float | None,
               budget: int, placer_for: Callable[[RunningJob], Placer], blocked: np.ndarray) -> Plan | None:
    """Open room for ``req`` on one node by moving interruptible jobs (of no higher priority) to other
    nodes where they fit now; ``blocked`` marks nodes the moved jobs may not go to."""
    def movable(j: RunningJob) -> bool:
        return j.interruptible and not j.evicting and j.priority <= priority and j.key not in taken

    best: tuple[tuple, Plan] | None = None
    for row in _rows(state, rows, by_row, movable):
        jobs = by_row.get(row, [])
        leaving = [j for j in jobs if j.evicting]
        cands = sorted((j for j in jobs if movable(j)),
                       key=lambda j: (j.alloc.gpu_milli * len(j.alloc.gpu_indices), lost_work(j, now, checkpoint_s)))
        chosen = smallest_set(state, row, req, cands, leaving)
        if not chosen or len(chosen) > budget:
            continue
        cost = (len(chosen), sum(j.gpus for j in chosen), sum(lost_work(j, now, checkpoint_s) for j in chosen))
        if best is not None and cost >= best[0]:
            continue
        if _relocatable(state, row, chosen, placer_for, blocked):
            best = (cost, Plan(row, tuple(chosen)))
    return best[1] if best else None


def _relocatable(state: ClusterState, row: int, jobs: list[RunningJob], placer_for: Callable[[RunningJob], Placer],
                 blocked: np.ndarray) -> bool:
    """Would every job fit somewhere other than ``row`` right now (tried on the picture, then undone)?"""
    mask = blocked.copy()
    mask[row] = True
    trial: list[str] = []
    ok = True
    try:
        state.mask(mask)
        for j in jobs:
            req = j.as_request()
            req = GpuRequest(key=f"{j.key}#move", whole_gpus=req.whole_gpus, gpu_milli=req.gpu_milli,
                             gpu_memory_gib=req.gpu_memory_gib, cpu_milli=req.cpu_milli, memory_mib=req.memory_mib,
                             gpu_models=req.gpu_models)
            out = placer_for(j).place(state, req)
            if not isinstance(out, Allocation):
                ok = False
                break
            state.reserve(out)
            trial.append(out.key)
    finally:
        for k in trial:
            state.release(k)
        state.mask(None)
    return ok
