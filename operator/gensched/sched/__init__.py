"""The scheduling cycle (pure): queue order, quotas, backfill, preemption and defragmentation.

One cycle takes a snapshot (the cluster picture with every GPU consumer, running jobs, due jobs,
quotas) and returns decisions; the operator's actuator and the simulator both apply them.
"""

from gensched.sched.cycle import schedule
from gensched.sched.model import (
    Backfill,
    CycleResult,
    Evict,
    HeadReservation,
    Place,
    Quota,
    RunningJob,
    Settings,
    Snapshot,
    Taint,
    Toleration,
    Wait,
    WaitingJob,
    WaitReason,
)

__all__ = [
    "Backfill",
    "CycleResult",
    "Evict",
    "HeadReservation",
    "Place",
    "Quota",
    "RunningJob",
    "Settings",
    "Snapshot",
    "Taint",
    "Toleration",
    "Wait",
    "WaitReason",
    "WaitingJob",
    "schedule",
]
