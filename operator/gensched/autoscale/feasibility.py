"""Can a Serve job be served at all on the GPUs the cluster has? (pure)

Checked before anything is deployed, so a hopeless job gets one clear condition and no
half-built RayService. What is checked is what would be deployed (``operator_plan``):
- memory: each replica of a model operator holds its share of the weights (layers, or its type's
  share, or its own ``parametersBillions``) plus the activation allowance and a runtime, inside its
  GPU share (Ray Serve ``num_gpus``) of ONE worker GPU. Ray packs replicas onto worker GPUs, so a
  worker GPU must have ``need / share`` GiB for every operator: that is checked against the GPUs the
  job may use (``resources.gpuModels``, else every GPU model of the cluster);
- replicas of more than one GPU: Ray workers have one GPU each, so such a replica would never start;
- TBT: even alone on the best GPU, each token reads the weights of every decoding operator once, so
  ``weights / bandwidth`` bounds the TBT from below (roofline bandwidth for known GPUs).
Each problem names the field and the closest setting that would work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gensched.api.generativejob import GenerativeJobSpec, ModelFamily, OperatorPhase
from gensched.api.sizing import BYTES_PER_PARAMETER, RUNTIME_OVERHEAD_GIB, model_memory_gib
from gensched.autoscale.rayservice import OperatorPlan, operator_plan
from gensched.autoscale.roofline import BW_EFF, GPUS


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


def model_total_gib(spec: GenerativeJobSpec) -> float:
    """GPU memory of one whole-model replica: ``resources.gpuMemoryGiB`` (per GPU) if set, else derived."""
    if spec.resources.gpu_memory_gib is not None:
        return spec.resources.gpu_memory_gib * max(1, spec.resources.whole_gpus)
    return model_memory_gib(spec.model.parameters_billions, spec.model.precision)


def replica_memory_gib(spec: GenerativeJobSpec, plan: OperatorPlan) -> float:
    """Memory one replica of ``plan`` needs: its share of the weights and activations, plus its own runtime."""
    total = model_total_gib(spec)
    return (total - RUNTIME_OVERHEAD_GIB) * plan.weight_share + RUNTIME_OVERHEAD_GIB


def worker_gpu_memory_gib(spec: GenerativeJobSpec) -> float:
    """GPU memory a Ray worker GPU must have so that every operator's replica fits in its share:
    ``max(need / share)``. This is what the packing engine should ask for per worker GPU."""
    return round(max(replica_memory_gib(spec, p) / min(p.gpus, 1.0) for p in operator_plan(spec)), 2)


def allowed_gpus(spec: GenerativeJobSpec, gpus: list[GpuType]) -> list[GpuType]:
    """The GPU types the job may land on (``resources.gpuModels``; empty: all)."""
    models = spec.resources.gpu_models
    return [g for g in gpus if not models or g.model in models]


def _fix_memory(spec: GenerativeJobSpec, plan: OperatorPlan, need: float, best: GpuType) -> str:
    share = need / best.memory_gib
    int8 = replica_memory_gib(spec.model_copy(update={"model": spec.model.model_copy(update={"precision": "int8"})}),
                              plan) if spec.resources.gpu_memory_gib is None else None
    quant = f"use model.precision int8 ({int8:.1f} GiB) or int4" if int8 is not None else "lower gpuMemoryGiB"
    if share <= 1:
        if not spec.serve or not spec.serve.operators:
            return f"raise resources.gpus to {math.ceil(share * 100) / 100:g}, or {quant}"
        return f"set serve.operators[{plan.name}].gpus to {math.ceil(share * 100) / 100:g}, or {quant}"
    parts = math.ceil((need - RUNTIME_OVERHEAD_GIB) / (best.memory_gib - RUNTIME_OVERHEAD_GIB))
    return (f"a replica must fit one GPU: split it into at least {parts} operators (serve.operators by layers or "
            f"type, each with gpus: 1), or {quant}")


def check_serve(spec: GenerativeJobSpec, gpus: list[GpuType]) -> list[Problem]:
    assert spec.serve is not None
    usable = allowed_gpus(spec, gpus)
    if not usable:
        return []  # nothing known yet (or no allowed model here): placement waits and says why
    best = max(usable, key=lambda g: g.memory_gib)
    plans = operator_plan(spec)
    problems: list[Problem] = []
    where = f"the largest GPU the job may use ({best.model}) has {best.memory_gib:g} GiB"
    for p in plans:
        need = replica_memory_gib(spec, p)
        if p.gpus > 1:
            problems.append(Problem(
                "ModelTooLarge",
                f"operator {p.name}: a replica asks for {p.gpus:g} GPUs, but each Ray worker has one GPU, so it "
                f"would never start; it needs {need:.1f} GiB: " + _fix_memory(spec, p, need, best)))
        elif need > p.gpus * best.memory_gib:
            problems.append(Problem(
                "ModelTooLarge",
                f"operator {p.name} needs {need:.1f} GiB of GPU memory per replica but its share {p.gpus:g} of a "
                f"GPU holds at most {p.gpus * best.memory_gib:.1f} GiB ({where}): "
                + _fix_memory(spec, p, need, best)))
    fastest = max((b for g in usable if (b := bandwidth_tb_s(g.model)) is not None), default=None)
    if fastest is not None and spec.serve.model_family() != ModelFamily.DIFFUSION:
        weights_gb = spec.model.parameters_billions * BYTES_PER_PARAMETER[spec.model.precision]
        # Every decoding operator runs once per token and reads its weights once; alone on a GPU it has
        # all of its bandwidth (a lower bound whatever the sharing).
        floor_ms = sum(weights_gb * p.weight_share / (max(1.0, p.gpus) * fastest) for p in plans
                       if p.phase != OperatorPhase.PREFILL)
        if floor_ms > spec.serve.slo.tbt_ms:
            problems.append(Problem("SLOUnreachable",
                                    f"serve.slo.tbtMs {spec.serve.slo.tbt_ms:g} ms is below what the fastest GPU here "
                                    f"can do: reading the weights alone takes {floor_ms:.1f} ms per token; set tbtMs "
                                    f">= {floor_ms * 1.25:.0f} or use a lower model.precision"))
    return problems
