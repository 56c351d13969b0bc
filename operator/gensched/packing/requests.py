"""Turn a GenerativeJob spec into a placement request (pure)."""

from __future__ import annotations

from gensched.api.generativejob import GenerativeJobSpec
from gensched.api.quantity import parse_quantity
from gensched.packing.cluster import GpuRequest


def request_for(key: str, spec: GenerativeJobSpec) -> GpuRequest:
    res = spec.resources
    return GpuRequest(
        key=key,
        whole_gpus=res.whole_gpus,
        gpu_milli=res.gpu_milli,
        gpu_memory_gib=spec.gpu_memory_gib(),
        cpu_milli=int(parse_quantity(res.cpu) * 1000),
        memory_mib=int(parse_quantity(res.memory) / 2**20),
        gpu_models=tuple(res.gpu_models),
    )
