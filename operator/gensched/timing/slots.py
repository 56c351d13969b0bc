"""Choosing slots on a cost curve: the arithmetic shared by the operator and the simulator.

Costs are per slot (forecast gCO2/kWh, price, or a weighted mix). A
non-interruptible job needs ``n`` consecutive slots; an interruptible one any
``n`` slots. Both must end by ``end`` (the last slot index + 1 that still meets
the deadline with its safety margin). Ties go to the earliest slot, so an
unchanged forecast never moves work later.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def best_start(cost: np.ndarray, n: int, end: int, usable: np.ndarray | None = None) -> int | None:
    """Start index in ``[0, end - n]`` minimising the summed cost of ``n`` consecutive slots,
    considering only starts whose ``n`` slots are all ``usable``; ``None`` if there is none."""
    last = min(end, len(cost)) - n
    if last < 0:
        return None
    c = np.concatenate(([0.0], np.cumsum(cost[: last + n])))
    sums = c[n: n + last + 1] - c[: last + 1]
    if usable is not None:
        bad = np.concatenate(([0], np.cumsum(~usable[: last + n])))
        sums = np.where(bad[n: n + last + 1] - bad[: last + 1] > 0, np.inf, sums)
    i = int(np.argmin(sums))
    return None if not np.isfinite(sums[i]) else i


def cheapest_slots(cost: np.ndarray, n: int, end: int, usable: np.ndarray | None = None) -> np.ndarray | None:
    """The ``n`` cheapest usable slot indices before ``end``, ascending; ``None`` if fewer exist."""
    end = min(end, len(cost))
    idx = np.arange(end)
    if usable is not None:
        idx = idx[usable[:end]]
    if len(idx) < n:
        return None
    order = np.argsort(cost[idx], kind="stable")[:n]
    return np.sort(idx[order])


@dataclass
class CapacityLedger:
    """Free GPUs per slot of a planning horizon; deferred jobs reserve here so that they do not
    all land in the same cheap window beyond what the cluster holds."""

    free: np.ndarray  # int GPUs (or milli-GPUs) per slot

    @classmethod
    def flat(cls, capacity: int, slots: int) -> CapacityLedger:
        return cls(np.full(slots, capacity, dtype=np.int64))

    def usable(self, first: int, length: int, need: int) -> np.ndarray:
        return self.free[first:first + length] >= need

    def reserve(self, slots: np.ndarray, need: int) -> None:
        if np.any(self.free[slots] < need):
            raise ValueError("capacity ledger over-committed: a slot has fewer free GPUs than requested")
        self.free[slots] -= need

    def release(self, slots: np.ndarray, need: int) -> None:
        self.free[slots] += need
