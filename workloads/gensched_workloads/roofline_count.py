"""Modelled GPU latency of a torch module from its operations, counted without running it.

The module runs on PyTorch's ``meta`` device (shapes only, no arithmetic, seconds even for a
full-size UNet). Each ATen operation it issues is one GPU kernel, as in eager PyTorch: its FLOPs come
from torch's own FLOP formulas (``torch.utils.flop_counter``), its memory traffic is the bytes of its
inputs and outputs (views are free; scaled-dot-product attention counts as one fused kernel reading
q, k, v and writing the output, as FlashAttention does). A kernel takes
``max(FLOPs / (peak x COMPUTE_EFF), bytes / (bandwidth x BW_EFF))`` on a whole GPU; the host issues
kernels at ``DISPATCH_US`` each, so a step takes at least ``kernels x DISPATCH_US``.

Kept apart per step: the time of compute-bound kernels (``compute_ms``, scales with the SMs a GPU
share gets) and of memory-bound kernels (``memory_ms``, scales with the bandwidth it reaches), which
is what the two-axis sharing model of ``gensched.autoscale.opmodel`` needs. Everything here is a
model from published peaks; nothing is measured on a GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

from gensched.autoscale.roofline import BW_EFF, COMPUTE_EFF, GPUS

DISPATCH_US = 8.0  # host time to issue one eager kernel (PyTorch + CUDA launch)
_FREE = {"view", "_unsafe_view", "t", "transpose", "permute", "expand", "unsqueeze", "squeeze", "slice", "select",
         "split", "split_with_sizes", "chunk", "alias", "detach", "as_strided", "unbind", "empty", "empty_like",
         "empty_strided", "new_empty", "lift_fresh", "unflatten", "view_as_real"}


@dataclass
class Counts:
    """Per GPU model: (compute_ms, memory_ms) over the kernels bound by each; kernels; FLOPs; bytes."""

    compute_ms: dict[str, float] = field(default_factory=dict)
    memory_ms: dict[str, float] = field(default_factory=dict)
    kernels: int = 0
    flops: float = 0.0
    bytes: float = 0.0
    largest_activation: float = 0.0  # bytes of the largest output tensor

    def add(self, flops: float, nbytes: float, out_bytes: float) -> None:
        self.kernels += 1
        self.flops += flops
        self.bytes += nbytes
        self.largest_activation = max(self.largest_activation, out_bytes)
        for key, g in GPUS.items():
            c = flops / (g.tflops * 1e12 * COMPUTE_EFF) * 1000
            m = nbytes / (g.tb_per_s * 1e12 * BW_EFF) * 1000
            if c >= m:
                self.compute_ms[key] = self.compute_ms.get(key, 0.0) + c
            else:
                self.memory_ms[key] = self.memory_ms.get(key, 0.0) + m

    @property
    def host_ms(self) -> float:
        return self.kernels * DISPATCH_US / 1000


def _nbytes(x: object) -> int:
    return x.numel() * x.element_size() if isinstance(x, torch.Tensor) else 0


class _Counter(TorchDispatchMode):
    def __init__(self, counts: Counts) -> None:
        super().__init__()
        self.counts = counts
        self.inside_sdpa = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.inside_sdpa or func.__name__.split(".")[0] in _FREE:
            return out
        packet = func._overloadpacket
        flops = flop_registry[packet](*args, **kwargs, out_val=out) if packet in flop_registry else 0
        outs = tree_leaves(out)
        self.counts.add(float(flops), float(sum(_nbytes(x) for x in tree_leaves((args, kwargs)) + outs)),
                        float(max((_nbytes(x) for x in outs), default=0)))
        return out


@contextlib.contextmanager
def _fused_sdpa(counter: _Counter) -> Iterator[None]:
    """Count scaled-dot-product attention as one kernel (FlashAttention never writes the scores)."""
    original = F.scaled_dot_product_attention

    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *a: object, **kw: object) -> torch.Tensor:
        out = q.new_empty((*q.shape[:-1], v.shape[-1]))
        flops = 4.0 * q.shape[:-1].numel() * k.shape[-2] * q.shape[-1]
        counter.counts.add(flops, float(sum(_nbytes(x) for x in (q, k, v, out))), float(_nbytes(out)))
        return out

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def count(run: Callable[[], object]) -> Counts:
    """Count the kernels ``run`` issues (it must build its inputs on the meta device)."""
    counts = Counts()
    counter = _Counter(counts)
    with _fused_sdpa(counter), counter, torch.no_grad():
        run()
    return counts
