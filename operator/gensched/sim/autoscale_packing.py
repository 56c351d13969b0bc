"""Whole GPUs a set of serving replicas occupies, as the packing engine places them (pure).

Replicas are placed one by one as they start (a share of one GPU, or whole GPUs for a replica that
spans several) and released when they stop, never re-packed, as the operator does; the count is the
GPUs with anything on them, what a bill charges."""

from __future__ import annotations

import math

from gensched.packing import Allocation, ClusterState, GpuNode, GpuRequest, get_placer

GPUS_PER_NODE = 8


class GpuCounter:
    def __init__(self, gpu_memory_gib: float, packing: str = "GpuPacking", gpus: int | None = None) -> None:
        total = gpus or 4096
        nodes = math.ceil(total / GPUS_PER_NODE)
        self.state = ClusterState([GpuNode(f"n{i:04d}", min(GPUS_PER_NODE, total - i * GPUS_PER_NODE),
                                           gpu_memory_gib=gpu_memory_gib) for i in range(nodes)])
        self.placer = get_placer(packing)
        self.gpu_gib = gpu_memory_gib
        self.placed: dict[str, list[Allocation]] = {}
        self.seq = 0

    def request(self, share: float, memory_gib: float | None = None) -> GpuRequest:
        self.seq += 1
        if share >= 1:
            whole = math.ceil(share - 1e-9)
            return GpuRequest(f"r{self.seq}", whole_gpus=whole, gpu_memory_gib=min(self.gpu_gib, (
                memory_gib if memory_gib is not None else share * self.gpu_gib) / whole))
        mem = memory_gib if memory_gib is not None else share * self.gpu_gib
        return GpuRequest(f"r{self.seq}", gpu_milli=max(1, round(share * 1000)), gpu_memory_gib=min(mem, self.gpu_gib))

    def set(self, group: str, count: int, share: float, memory_gib: float | None = None) -> int:
        """Grow or shrink ``group`` to ``count`` replicas of ``share``; returns how many it has (growth stops
        at the first replica that does not fit)."""
        have = self.placed.setdefault(group, [])
        while len(have) > count:
            self.state.release(have.pop().key)
        while len(have) < count:
            out = self.placer.place(self.state, self.request(share, memory_gib))
            if not isinstance(out, Allocation):
                break
            self.state.reserve(out)
            have.append(out)
        return len(have)

    @property
    def whole(self) -> int:
        return int(((self.state.gpu_free < 1000) & self.state.gpu_exists).sum())
