"""Where GPU work goes: the cluster picture and placement policies (pure, no Kubernetes)."""

from gensched.packing.cluster import Allocation, ClusterState, GpuNode, GpuRequest, OverCommitError
from gensched.packing.policies import POLICIES, Placer, Unschedulable, get_placer

__all__ = [
    "POLICIES",
    "Allocation",
    "ClusterState",
    "GpuNode",
    "GpuRequest",
    "OverCommitError",
    "Placer",
    "Unschedulable",
    "get_placer",
]
