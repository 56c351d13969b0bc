"""The operator's cluster picture: GPU nodes plus the reservations recorded on owned Jobs.

It lives in memory for speed, but is only ever a cache of the API: ``rebuild``
reads nodes and Jobs after a (re)start; every reservation is written to its
Job before the Job is released. A lock makes place/release atomic across
kopf's handler threads, so a GPU share is never handed out twice.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from gensched.controller.nodes import gpu_node_from
from gensched.controller.objects import ANN_PLACEMENT, decode_allocation, job_finished
from gensched.packing import Allocation, ClusterState, GpuNode, GpuRequest, Placer, Unschedulable, get_placer
from gensched.packing.fgd import TaskMix

log = logging.getLogger(__name__)
HISTORY = 5000  # requests remembered for the learned task mix
RELEARN_EVERY = 50  # new requests between two re-estimates of the mix


class Reservations:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._nodes: dict[str, GpuNode] = {}
        self._state = ClusterState([])
        self._history: OrderedDict[str, GpuRequest] = OrderedDict()  # by key: retries count once
        self._seen_since_mix = 0
        self._mix: TaskMix | None = None
        self._placers: dict[str, Placer] = {}

    def rebuild(self, nodes: list[dict], jobs: list[dict], extra: list[Allocation] | None = None) -> list[str]:
        """Reset from API objects (and ``extra`` reservations, e.g. serving workers'); returns conflicts
        (two owners claiming one GPU share)."""
        allocs = list(extra or [])
        for job in jobs:
            ann = (job.get("metadata", {}).get("annotations") or {}).get(ANN_PLACEMENT)
            if ann and not job_finished(job):
                try:
                    allocs.append(decode_allocation(ann))
                except (ValueError, KeyError) as exc:
                    log.warning("ignoring unreadable placement on Job %s: %s", job["metadata"]["name"], exc)
        with self._lock:
            self._nodes = {n.name: n for n in filter(None, (gpu_node_from(n) for n in nodes))}
            self._state, conflicts = ClusterState.rebuild(list(self._nodes.values()), allocs)
        for c in conflicts:
            log.error("reservation conflict while rebuilding: %s", c)
        return conflicts

    def load(self, state: ClusterState) -> None:
        """Adopt a picture rebuilt from the caches (each loop iteration starts from the API's truth)."""
        with self._lock:
            self._state = state
            self._nodes = {n.name: n for n in state.nodes}

    @property
    def state(self) -> ClusterState:
        return self._state

    def learn(self, req: GpuRequest) -> None:
        """Remember a request for the task mix FGD and Gensched score against."""
        with self._lock:
            if req.key not in self._history:
                self._history[req.key] = req
                self._seen_since_mix += 1
                if len(self._history) > HISTORY:
                    self._history.popitem(last=False)

    def placer(self, strategy: str) -> Placer:
        with self._lock:
            if (self._mix is None or self._seen_since_mix >= RELEARN_EVERY) and self._history:
                self._mix = TaskMix.from_requests(list(self._history.values()))
                self._seen_since_mix = 0
                self._placers.clear()
            if strategy not in self._placers:
                self._placers[strategy] = get_placer(strategy, mix=self._mix)
            return self._placers[strategy]

    def upsert_node(self, node: dict) -> None:
        gpu = gpu_node_from(node)
        name = node["metadata"]["name"]
        with self._lock:
            if gpu is None:
                if name in self._nodes:
                    del self._nodes[name]
                    self._reindex()
            elif self._nodes.get(name) != gpu:
                self._nodes[name] = gpu
                self._reindex()

    def remove_node(self, name: str) -> None:
        with self._lock:
            if self._nodes.pop(name, None) is not None:
                self._reindex()

    def _reindex(self) -> None:
        allocs = list(self._state.allocations.values())
        self._state, conflicts = ClusterState.rebuild(list(self._nodes.values()), allocs)
        for c in conflicts:
            log.error("node change left a reservation without room: %s", c)

    def _placer(self, strategy: str, req: GpuRequest) -> Placer:
        """Placers are kept (FGD caches per-node work); the task mix is re-learned from recent requests."""
        if req.key not in self._history:
            self._history[req.key] = req
            self._seen_since_mix += 1
            if len(self._history) > HISTORY:
                self._history.popitem(last=False)
        if self._mix is None or self._seen_since_mix >= RELEARN_EVERY:
            self._mix = TaskMix.from_requests(list(self._history.values()))
            self._seen_since_mix = 0
            self._placers.clear()
        if strategy not in self._placers:
            self._placers[strategy] = get_placer(strategy, mix=self._mix)
        return self._placers[strategy]

    def place(self, req: GpuRequest, strategy: str) -> Allocation | Unschedulable:
        """Choose and reserve in one step (or return why not)."""
        with self._lock:
            held = self._state.allocation(req.key)
            if held is not None:
                return held
            decision = self._placer(strategy, req).place(self._state, req)
            if isinstance(decision, Allocation):
                self._state.reserve(decision)
            return decision

    def adopt(self, alloc: Allocation) -> None:
        """Record a reservation found on a Job (idempotent)."""
        with self._lock:
            if self._state.allocation(alloc.key) != alloc:
                self._state.release(alloc.key)
                self._state.reserve(alloc)

    def release(self, key: str) -> Allocation | None:
        with self._lock:
            return self._state.release(key)

    def holding(self, key: str) -> Allocation | None:
        with self._lock:
            return self._state.allocation(key)

    def gpu_model(self, node: str) -> str | None:
        with self._lock:
            known = self._nodes.get(node)
            return known.gpu_model if known else None

    def gpu_types(self) -> list[tuple[str, float]]:
        """Distinct (GPU model, memory GiB) of the known GPU nodes."""
        with self._lock:
            return sorted({(n.gpu_model, n.gpu_memory_gib) for n in self._nodes.values()})

    def common_gpu_model(self) -> str | None:
        """The GPU model most GPUs in the cluster have (for energy estimates before placement)."""
        with self._lock:
            counts: dict[str, int] = {}
            for n in self._nodes.values():
                if n.gpu_model:
                    counts[n.gpu_model] = counts.get(n.gpu_model, 0) + n.gpu_count
        return max(counts, key=lambda m: counts[m]) if counts else None

    def snapshot(self) -> tuple[int, int, float, int]:
        """(allocated milli, total milli, fragmentation, GPU nodes)."""
        with self._lock:
            s = self._state
            return s.allocated_milli(), s.total_milli(), s.fragmentation(), len(self._nodes)


RESERVATIONS = Reservations()
