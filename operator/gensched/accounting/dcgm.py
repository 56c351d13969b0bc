"""PromQL for NVIDIA DCGM exporter metrics of one job's pods (strings only; the query runs in observe/).

The exporter labels each GPU's series with the pod using it (``pod``, ``namespace``; scraped without
``honorLabels`` they arrive as ``exported_pod``/``exported_namespace``, hence the label names are
settings). Units: ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` is millijoules since the driver loaded,
``DCGM_FI_DEV_POWER_USAGE`` watts, ``DCGM_FI_DEV_GPU_UTIL`` percent. Each query sums (or averages)
over the job's GPUs so the result is one number per instant, what ``usage.Sample`` takes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
POWER = "DCGM_FI_DEV_POWER_USAGE"
UTIL = "DCGM_FI_DEV_GPU_UTIL"
JOULES_PER_ENERGY_UNIT = 1e-3  # the counter is in mJ


@dataclass(frozen=True)
class DcgmQueries:
    energy_joules: str
    power_watts: str
    utilization: str


def _escape(text: str) -> str:
    return re.escape(text).replace("\\", "\\\\").replace('"', '\\"')


def job_queries(namespace: str, pods: Sequence[str], pod_label: str = "pod",
                namespace_label: str = "namespace") -> DcgmQueries:
    """Queries summing the DCGM series of ``pods`` (exact names) in ``namespace``."""
    if not pods:
        raise ValueError("job_queries: no pods to match")
    for label in (pod_label, namespace_label):
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label):
            raise ValueError(f"{label!r} is not a Prometheus label name")
    ns = namespace.replace("\\", "\\\\").replace('"', '\\"')
    sel = f'{namespace_label}="{ns}",{pod_label}=~"{"|".join(_escape(p) for p in sorted(pods))}"'
    return DcgmQueries(
        energy_joules=f"sum({ENERGY}{{{sel}}}) * {JOULES_PER_ENERGY_UNIT:g}",
        power_watts=f"sum({POWER}{{{sel}}})",
        utilization=f"avg({UTIL}{{{sel}}}) / 100",
    )
