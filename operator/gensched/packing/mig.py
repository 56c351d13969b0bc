"""MIG-partitioned GPUs as the packing engine models them (NVIDIA's "single" MIG strategy).

With the single strategy every GPU of a node is cut into equal instances of one profile, and the
device plugin advertises each instance as one ``nvidia.com/gpu``; GPU Feature Discovery names the
profile in the product label (``A100-SXM4-80GB-MIG-1g.10gb``). A profile ``<g>g.<m>gb`` holds ``g``
of the GPU's 7 compute slices and ``m`` GB of its memory. An instance is handed out whole: a job
asking for 100 milli-GPU on a 1g.10gb node takes a 142-milli, 10 GB instance. A GPU holds
``floor(1000 / milli)`` instances (1g: 7, 2g: 3, 3g: 2, 4g: 1), which is also what MIG allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COMPUTE_SLICES = 7
MILLI = 1000
_PROFILE = re.compile(r"^(\d)g\.(\d+)gb(?:\+me)?$")
_MIG_SUFFIX = re.compile(r"-MIG-(\d)g\.(\d+)gb(?:\+me)?$", re.IGNORECASE)


@dataclass(frozen=True)
class MigProfile:
    compute_slices: int  # of 7
    memory_gib: float

    @classmethod
    def parse(cls, name: str) -> MigProfile:
        """``1g.10gb`` (or ``1g.10gb+me``) -> MigProfile(1, 10)."""
        m = _PROFILE.match(name.strip().lower())
        if not m or not 1 <= int(m.group(1)) <= COMPUTE_SLICES - 3 or int(m.group(2)) <= 0:
            raise ValueError(f"MIG profile {name!r} is not <g>g.<mem>gb with g in 1..4 (7g is a whole GPU), "
                             "for example 1g.10gb or 3g.40gb")
        return cls(int(m.group(1)), float(m.group(2)))

    @property
    def name(self) -> str:
        return f"{self.compute_slices}g.{self.memory_gib:g}gb"

    @property
    def milli(self) -> int:
        """Compute share of one instance, rounded down so the instances of a GPU never exceed it."""
        return MILLI * self.compute_slices // COMPUTE_SLICES

    @property
    def per_gpu(self) -> int:
        return MILLI // self.milli


def profile_of_product(product: str) -> MigProfile | None:
    """The MIG profile in a GPU Feature Discovery product label, None for an unpartitioned GPU."""
    m = _MIG_SUFFIX.search(product)
    if m is None or not 1 <= int(m.group(1)) <= COMPUTE_SLICES - 3:
        return None
    return MigProfile(int(m.group(1)), float(m.group(2)))
