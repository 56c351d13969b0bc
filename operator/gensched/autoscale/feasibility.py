"""Can a Serve job be served at all on the GPUs the cluster has? (pure)

Checked before anything is deployed, so a hopeless job gets one clear condition and no
half-built RayService:
- memory: each model operator's share of the model (by layer count; the whole model when there
  are no operators) must fit in its GPU share, or in 8 of the largest GPUs when no share is set;
- TBT: even one sequence on the best GPU must read the operator's weights once per token, so
  ``weights / (GPUs x bandwidth)`` bounds the TBT from below (roofline bandwidth for known GPUs).
Each problem names the field and the closest setting that would work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gensched.api.generativejob import GenerativeJobSpec
from gensched.api.sizing import BYTES_PER_PARAMETER, model_memory_gib
from gensched.autoscale.roofline import BW_EFF, GPUS
from gensched.packing.cluster import MAX_GPUS


@dataclass(frozen=True)
class GpuType:
    model: str
    memory_gib: float


@dataclass(frozen=True)
class Problem:
    reason: str  # condition reason
    message: str


def bandwidth_tb_s(gpu_model: str) -> float | None:
    name = gpu_model.upper()
    for key, spec in GPUS.items():
        if key.upper() in name:
            return spec.tb_per_s * BW_EFF
    return None


def check_serve(spec: GenerativeJobSpec, gpus: list[GpuType]) -> list[Problem]:
    assert spec.serve is not None
    if not gpus:
        return []  # nothing known yet: placement will wait for GPU nodes
    best_mem = max(g.memory_gib for g in gpus)
    total = model_memory_gib(spec.model.parameters_billions, spec.model.precision)
    layers = spec.model.layers or 1
    ops = [(op.name, len(op.layer_indices()) / layers, op.gpus) for op in spec.serve.operators] or [
        ("model", 1.0, None)]
    problems: list[Problem] = []
    for name, frac, share in ops:
        need = total * frac
        room = share * best_mem if share is not None else MAX_GPUS * best_mem
        if need > room:
            int8 = model_memory_gib(spec.model.parameters_billions, "int8") * frac
            fix = (f"raise serve.operators[{name}].gpus to {need / best_mem:.2f}" if share is not None else
                   f"split it into at least {math.ceil(need / room)} operators, or use model.precision int8 "
                   f"({int8:.0f} GiB) or int4")
            problems.append(Problem("ModelTooLarge",
                                    f"operator {name} needs {need:.1f} GiB of GPU memory but a replica can have at "
                                    f"most {room:.0f} GiB on this cluster's GPUs ({best_mem:.0f} GiB each): {fix}"))
    fastest = max((b for g in gpus if (b := bandwidth_tb_s(g.model)) is not None), default=None)
    if fastest is not None:
        weights_gb = spec.model.parameters_billions * BYTES_PER_PARAMETER[spec.model.precision]
        # Operators run one after another for each token; each reads its weights once.
        floor_ms = sum(weights_gb * frac / ((share or MAX_GPUS) * fastest) for _, frac, share in ops)
        if floor_ms > spec.serve.slo.tbt_ms:
            problems.append(Problem("SLOUnreachable",
                                    f"serve.slo.tbtMs {spec.serve.slo.tbt_ms:g} ms is below what the fastest GPU here "
                                    f"can do: reading the weights alone takes {floor_ms:.1f} ms per token; set tbtMs "
                                    f">= {floor_ms * 1.25:.0f} or use a lower model.precision"))
    return problems
