"""GPU memory a model needs, derived from its size and numeric precision.

This is the "right-sizing by quantization" rule: the same 7B model needs
~16 GiB in bf16 but ~5 GiB in int4, so it can share a GPU instead of taking one.

    need_GiB = parameters x bytes_per_parameter x (1 + ACTIVATION_OVERHEAD) + RUNTIME_OVERHEAD_GIB

ACTIVATION_OVERHEAD (20%) covers activations and a modest KV cache for batch
work; RUNTIME_OVERHEAD_GIB (1 GiB) covers the CUDA context and allocator slack.
Set ``resources.gpuMemoryGiB`` to override it (long contexts need more KV cache).
"""

from __future__ import annotations

BYTES_PER_PARAMETER: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "int8": 1.0,
    "int4": 0.5,
}
ACTIVATION_OVERHEAD = 0.20
RUNTIME_OVERHEAD_GIB = 1.0
GIB = 2**30


def model_memory_gib(parameters_billions: float, precision: str) -> float:
    """GPU memory in GiB for serving or running the model at ``precision``."""
    try:
        bpp = BYTES_PER_PARAMETER[precision]
    except KeyError as exc:
        raise ValueError(
            f"unknown precision {precision!r}: use one of {', '.join(BYTES_PER_PARAMETER)}"
        ) from exc
    weights = parameters_billions * 1e9 * bpp / GIB
    return round(weights * (1.0 + ACTIVATION_OVERHEAD) + RUNTIME_OVERHEAD_GIB, 2)
