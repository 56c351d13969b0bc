"""A built-in synthetic GPU cluster and generative job mix (no files, no cluster needed)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from gensched.api import GenerativeJobSpec
from gensched.packing import GpuNode

GPU_TYPES = [  # (GFD product label, memory GiB, GPUs per node, share of nodes)
    ("NVIDIA-A100-SXM4-80GB", 80.0, 8, 0.5),
    ("NVIDIA-H100-80GB-HBM3", 80.0, 8, 0.25),
    ("NVIDIA-L4", 24.0, 4, 0.25),
]

MODELS = [  # (name, billions of parameters, weight of this model in the mix)
    ("llama-3-8b", 8, 0.35), ("mistral-7b", 7, 0.2), ("sdxl", 3.5, 0.15),
    ("llama-2-13b", 13, 0.15), ("llama-3-70b", 70, 0.15),
]
PRECISIONS = [("bf16", 0.5), ("int8", 0.25), ("int4", 0.25)]


@dataclass(frozen=True)
class SyntheticJob:
    name: str
    spec: GenerativeJobSpec


def synthetic_cluster(nodes: int, seed: int) -> list[GpuNode]:
    rng = random.Random(seed)
    out = []
    for i in range(nodes):
        product, mem, count, _ = rng.choices(GPU_TYPES, weights=[t[3] for t in GPU_TYPES])[0]
        out.append(GpuNode(name=f"gpu-{i:03d}", gpu_count=count, gpu_model=product, gpu_memory_gib=mem,
                           cpu_milli=96_000 if count == 8 else 48_000,
                           memory_mib=(1024 if count == 8 else 384) * 1024))
    return out


def synthetic_jobs(n: int, seed: int) -> list[SyntheticJob]:
    """Jobs whose GPU share follows from model size and precision, like real users would ask."""
    rng = random.Random(seed + 1)
    jobs = []
    for i in range(n):
        name, params, _ = rng.choices(MODELS, weights=[m[2] for m in MODELS])[0]
        precision = rng.choices([p[0] for p in PRECISIONS], weights=[p[1] for p in PRECISIONS])[0]
        need = GenerativeJobSpec.model_validate({
            "mode": "Batch", "model": {"name": name, "parametersBillions": params, "precision": precision,
                                       "image": "x"},
            "resources": {"gpus": 1}, "batch": {"input": "x"}}).gpu_memory_gib()
        gpus: float
        if need <= 20:
            gpus = rng.choice([0.25, 0.5])
        elif need <= 80:
            gpus = 1
        else:
            gpus = float(min(8, 2 ** round(need / 80).bit_length()))
        spec = GenerativeJobSpec.model_validate({
            "mode": "Batch",
            "model": {"name": name, "parametersBillions": params, "precision": precision, "image": "x"},
            "resources": {"gpus": gpus, "cpu": str(rng.choice([2, 4, 8])), "memory": f"{rng.choice([8, 16, 32])}Gi"},
            "batch": {"input": f"s3://data/{i}.jsonl", "estimatedDuration": f"{rng.randint(1, 8)}h"},
        })
        jobs.append(SyntheticJob(f"job-{i:04d}", spec))
    return jobs
