"""Read GPU nodes the way NVIDIA's device plugin and GPU Feature Discovery describe them.

MIG: with the ``single`` strategy (label ``nvidia.com/mig.strategy``) every GPU is cut into equal
instances, each advertised as one ``nvidia.com/gpu``, and the product label ends in the profile
(``...-MIG-1g.10gb``); the node becomes a MIG node of ``instances / per GPU`` physical GPUs that
hands out whole instances (``packing/mig.py``). With the ``mixed`` strategy MIG instances are separate
resources (``nvidia.com/mig-1g.10gb``) that a suspended Job cannot switch to, so only the node's
unpartitioned ``nvidia.com/gpu`` count is used.
"""

from __future__ import annotations

from gensched.api.quantity import parse_quantity
from gensched.packing import GpuNode
from gensched.packing.mig import profile_of_product
from gensched.sched import Taint

GPU_RESOURCE = "nvidia.com/gpu"
LABEL_PRODUCT = "nvidia.com/gpu.product"
LABEL_MEMORY = "nvidia.com/gpu.memory"  # MiB per GPU
LABEL_COUNT = "nvidia.com/gpu.count"  # physical GPUs (capacity may count time-slicing replicas)
LABEL_MIG_STRATEGY = "nvidia.com/mig.strategy"


SHARED_SUFFIX = "-SHARED"  # GPU Feature Discovery marks time-sliced GPUs so; the model is the base product


def node_taints(node: dict) -> tuple[Taint, ...]:
    """The node's taints that keep work off (NoSchedule, NoExecute)."""
    out = []
    for t in (node.get("spec") or {}).get("taints") or []:
        if t.get("effect") in ("NoSchedule", "NoExecute") and t.get("key"):
            out.append(Taint(str(t["key"]), t.get("value"), str(t["effect"])))
    return tuple(out)


def _quantity(value: object, default: str) -> float:
    try:
        return float(parse_quantity(str(value if value is not None else default)))
    except ValueError:
        return float(parse_quantity(default))


def gpu_node_from(node: dict) -> GpuNode | None:
    """A GpuNode for a node with GPUs (cordoned ones too: what runs there still counts), else None."""
    meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    labels = meta.get("labels") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    count = labels.get(LABEL_COUNT) or alloc.get(GPU_RESOURCE) or (status.get("capacity") or {}).get(GPU_RESOURCE)
    if labels.get(LABEL_MIG_STRATEGY) == "mixed":  # partitioned GPUs are not nvidia.com/gpu: count what is
        count = alloc.get(GPU_RESOURCE)
    try:
        gpus = int(_quantity(count, "0")) if count is not None else 0
    except ValueError:
        return None
    if gpus <= 0:
        return None
    mem_mib = labels.get(LABEL_MEMORY)
    product = labels.get(LABEL_PRODUCT, "unknown")
    if product.upper().endswith(SHARED_SUFFIX):
        product = product[: -len(SHARED_SUFFIX)]
    memory_gib = round(int(mem_mib) / 1024, 2) if mem_mib and mem_mib.isdigit() else 80.0
    mig = profile_of_product(product) if labels.get(LABEL_MIG_STRATEGY) == "single" else None
    if mig is not None:  # count = MIG instances; the model is the product without the profile
        gpus = max(1, gpus // mig.per_gpu)
        product = product[: product.upper().rindex("-MIG-")]
        memory_gib = mig.memory_gib
    return GpuNode(
        name=meta["name"],
        gpu_count=gpus,
        gpu_model=product,
        gpu_memory_gib=memory_gib,
        mig_profile=mig.name if mig else "",
        cpu_milli=int(_quantity(alloc.get("cpu"), "64") * 1000),
        memory_mib=int(_quantity(alloc.get("memory"), "512Gi") / 2**20),
        schedulable=not spec.get("unschedulable"),
        taints=tuple((t.key, t.value, t.effect) for t in node_taints(node)),
    )
