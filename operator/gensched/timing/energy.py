"""Energy of a GPU job from a documented power model, and the emissions it implies.

Power per GPU = board TDP x average utilisation (``timing.gpuUtilization``);
TDPs are the vendors' published board powers. CPU, memory and cooling are not
counted, so absolute numbers are a lower bound; savings percentages do not
depend on the power model because the same power applies to both plans.
"""

from __future__ import annotations

TDP_WATTS: dict[str, float] = {
    "H100-SXM": 700.0, "H100-PCIE": 350.0, "H100": 700.0, "H200": 700.0,
    "A100-SXM": 400.0, "A100-PCIE": 300.0, "A100": 400.0,
    "L40S": 350.0, "L40": 300.0, "L4": 72.0, "A10": 150.0, "A30": 165.0,
    "V100": 300.0, "T4": 70.0, "P100": 250.0,
}
DEFAULT_TDP_WATTS = 300.0


def tdp_watts(gpu_model: str | None) -> float:
    """Board power of a GPU Feature Discovery product name such as ``NVIDIA-A100-SXM4-80GB``:
    the longest known model name it contains; the default when unknown."""
    name = (gpu_model or "").upper().replace("SXM4", "SXM").replace("SXM5", "SXM")
    best = ""
    for key in TDP_WATTS:
        if key in name and len(key) > len(best):
            best = key
    return TDP_WATTS[best] if best else DEFAULT_TDP_WATTS


def job_power_kw(gpus: float, gpu_model: str | None, utilization: float) -> float:
    """Average draw of a job holding ``gpus`` GPUs (fractions count pro rata)."""
    return gpus * tdp_watts(gpu_model) * utilization / 1000.0


def grams(power_kw: float, hours: float, intensity_g_per_kwh: float) -> float:
    return power_kw * hours * intensity_g_per_kwh
