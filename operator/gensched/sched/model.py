"""What one scheduling cycle sees (a snapshot) and what it decides (pure data, no Kubernetes).

Times are seconds on any one clock (the operator uses Unix time, the simulator trace time).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from gensched.packing import Allocation, ClusterState, GpuRequest


class Backfill(StrEnum):
    EASY = "easy"  # later jobs may start if they cannot delay the head job's reserved start
    NONE = "none"  # strict FIFO: nothing passes a blocked head job
    UNRESTRICTED = "unrestricted"  # anything that fits goes (the head job may starve)


class WaitReason(StrEnum):
    UNSCHEDULABLE = "Unschedulable"  # no room now; placed when capacity frees up
    NEVER_FITS = "NeverFits"  # larger than any node or quota: needs a spec or cluster change
    QUOTA = "QuotaExceeded"  # the namespace's quota binds now
    BEHIND_HEAD = "BehindHead"  # strict FIFO, or its start would delay the head job's reservation
    PREEMPTING = "Preempting"  # lower-priority work is being suspended to make room
    DEFRAGMENTING = "Defragmenting"  # interruptible work is being moved to open a node or GPU


@dataclass(frozen=True)
class Taint:
    key: str
    value: str | None
    effect: str


@dataclass(frozen=True)
class Toleration:
    key: str | None = None
    operator: str = "Equal"  # or Exists
    value: str | None = None
    effect: str | None = None

    def matches(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and (self.value or "") == (taint.value or "")


@dataclass(frozen=True)
class WaitingJob:
    """A job that is due (its timing decision says now) and holds no GPUs."""

    key: str
    request: GpuRequest
    namespace: str = "default"
    priority: int = 0
    queued_at: float = 0.0
    latest_start: float | None = None  # deadline - estimated duration - safety margin
    duration_s: float | None = None  # expected run time, if the user said
    interruptible: bool = False
    strategy: str = "Gensched"
    tolerations: tuple[Toleration, ...] = ()
    nominated_node: str | None = None  # held for it by an earlier cycle (preemption or defragmentation)

    @property
    def gpus(self) -> float:
        return self.request.milli_total / 1000

    @property
    def gpu_hours(self) -> float:
        return self.gpus * (self.duration_s or 0.0) / 3600


@dataclass(frozen=True)
class RunningJob:
    """A gensched job holding GPUs (a released batch Job or a Serve job's workers)."""

    key: str
    alloc: Allocation
    namespace: str = "default"
    priority: int = 0
    interruptible: bool = False
    started_at: float = 0.0
    expected_end: float | None = None
    checkpoint_at: float | None = None  # last checkpoint: work after it is lost when suspended
    evicting: bool = False  # already asked to stop; its GPUs come back when its pods are gone
    strategy: str = "Gensched"  # packing policy used when it is moved
    request: GpuRequest | None = None  # what it asked for (re-placing it when moved); else read off alloc

    def as_request(self) -> GpuRequest:
        if self.request is not None:
            return self.request
        a = self.alloc
        whole = len(a.gpu_indices) if a.gpu_milli == 1000 else 0
        return GpuRequest(key=self.key, whole_gpus=whole, gpu_milli=a.gpu_milli if not whole else 1000,
                          gpu_memory_gib=a.gpu_memory_gib, cpu_milli=a.cpu_milli, memory_mib=a.memory_mib)

    @property
    def gpus(self) -> float:
        return len(self.alloc.gpu_indices) * self.alloc.gpu_milli / 1000 if self.alloc.gpu_indices else 0.0


@dataclass(frozen=True)
class Quota:
    namespace: str
    max_gpus: float | None = None
    max_gpu_hours: float | None = None
    used_gpu_hours: float = 0.0  # started or used in the current period
    cohort: str | None = None
    borrowing: bool = False


@dataclass(frozen=True)
class Settings:
    backfill: Backfill = Backfill.EASY
    priority: bool = True  # False: age order only (the FIFO baselines)
    preemption: bool = True
    defragmentation: bool = True
    max_preemptions: int = 4
    max_moves: int = 2
    scan_limit: int = 500  # blocked jobs tried per cycle; the rest keep their place (Slurm's bf_max_job_test)
    # blocked jobs that get a node held for them (EASY backfill: 1, the head job; Moab's RESERVATIONDEPTH);
    # later jobs may use a held node only if they end before that reservation's start
    reservations: int = 1
    checkpoint_s: float | None = None  # when a job's last checkpoint is unknown: assume one every so often


@dataclass
class Snapshot:
    """The cluster as the cycle sees it. ``state`` already holds every consumer's and running job's
    allocation (foreign GPU pods included); the cycle reserves what it places on it."""

    state: ClusterState
    now: float
    waiting: list[WaitingJob]
    running: list[RunningJob] = field(default_factory=list)
    quotas: dict[str, Quota] = field(default_factory=dict)
    taints: dict[str, tuple[Taint, ...]] = field(default_factory=dict)  # node -> NoSchedule taints
    settings: Settings = field(default_factory=Settings)
    # ``running`` by node name, for callers that keep such an index as jobs start and end (the
    # simulator holds ~7,000 running jobs): the cycle then reads only the nodes it examines instead
    # of indexing every running job each cycle. None: built from ``running`` when first needed.
    running_by_node: Mapping[str, Iterable[RunningJob]] | None = None


@dataclass(frozen=True)
class Place:
    key: str
    alloc: Allocation
    backfill: bool = False  # started while an earlier job waits


@dataclass(frozen=True)
class Wait:
    key: str
    reason: WaitReason
    message: str
    position: int
    nominated_node: str | None = None


@dataclass(frozen=True)
class Evict:
    """Suspend ``key`` (interruptible): for a higher-priority job, or to move it elsewhere."""

    key: str
    by: str
    reason: str  # "Preempted" or "Defragment"
    node: str
    lost_s: float  # work since its last checkpoint


@dataclass(frozen=True)
class HeadReservation:
    key: str
    node: str
    start: float  # earliest time it fits there (inf: unknown)


@dataclass
class CycleResult:
    placed: list[Place] = field(default_factory=list)
    waiting: list[Wait] = field(default_factory=list)
    evictions: list[Evict] = field(default_factory=list)
    head: HeadReservation | None = None
    reservations: list[HeadReservation] = field(default_factory=list)  # head first, then later held nodes
    order: list[str] = field(default_factory=list)  # queue order of this cycle
