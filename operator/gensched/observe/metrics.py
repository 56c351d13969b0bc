"""Prometheus metrics exported by the operator (scraped through the chart's Service)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server

DECISIONS = Counter("gensched_decisions_total", "Scheduling decisions taken", ["decision"])
GPU_ALLOCATED = Gauge("gensched_gpu_allocated_milli", "GPU capacity reserved, in milli-GPU")
GPU_CAPACITY = Gauge("gensched_gpu_capacity_milli", "GPU capacity of known GPU nodes, in milli-GPU")
FRAGMENTATION = Gauge("gensched_gpu_fragmentation_ratio", "Share of all GPU capacity left free on partly used GPUs")
GPU_NODES = Gauge("gensched_gpu_nodes", "Schedulable GPU nodes known to the operator")
CARBON_SAVED = Counter("gensched_carbon_saved_grams", "gCO2 saved by time shifting, measured at job end "
                       "(negative when a job ran dirtier than at its decision time)")
DEFERRED = Counter("gensched_deferred_jobs", "Batch jobs held back for a cleaner or cheaper time")
MODEL_OPERATOR_REPLICAS = Gauge("gensched_model_operator_replicas", "Replicas per model operator",
                                ["job", "operator"])


def update_cluster(allocated: int, total: int, fragmentation: float, nodes: int) -> None:
    GPU_ALLOCATED.set(allocated)
    GPU_CAPACITY.set(total)
    FRAGMENTATION.set(fragmentation)
    GPU_NODES.set(nodes)


def serve(port: int) -> None:
    if port:
        start_http_server(port)
