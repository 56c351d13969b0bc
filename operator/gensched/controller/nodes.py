"""Read GPU nodes the way NVIDIA's device plugin and GPU Feature Discovery describe them."""

from __future__ import annotations

from gensched.api.quantity import parse_quantity
from gensched.packing import GpuNode

GPU_RESOURCE = "nvidia.com/gpu"
LABEL_PRODUCT = "nvidia.com/gpu.product"
LABEL_MEMORY = "nvidia.com/gpu.memory"  # MiB per GPU
LABEL_COUNT = "nvidia.com/gpu.count"  # physical GPUs (capacity may count time-slicing replicas)


def gpu_node_from(node: dict) -> GpuNode | None:
    """A GpuNode for a schedulable node with GPUs, else None."""
    meta, spec, status = node.get("metadata", {}), node.get("spec", {}), node.get("status", {})
    if spec.get("unschedulable"):
        return None
    labels = meta.get("labels") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    count = labels.get(LABEL_COUNT) or alloc.get(GPU_RESOURCE) or (status.get("capacity") or {}).get(GPU_RESOURCE)
    try:
        gpus = int(count) if count is not None else 0
    except ValueError:
        return None
    if gpus <= 0:
        return None
    mem_mib = labels.get(LABEL_MEMORY)
    return GpuNode(
        name=meta["name"],
        gpu_count=gpus,
        gpu_model=labels.get(LABEL_PRODUCT, "unknown"),
        gpu_memory_gib=round(int(mem_mib) / 1024, 2) if mem_mib and mem_mib.isdigit() else 80.0,
        cpu_milli=int(parse_quantity(alloc.get("cpu", "64")) * 1000),
        memory_mib=int(parse_quantity(alloc.get("memory", "512Gi")) / 2**20),
    )
