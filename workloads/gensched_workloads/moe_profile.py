"""Latency curves of the mixture-of-experts decoder's typed operators (``Embedding``, ``Attention``,
``Experts`` groups) against batch size and context, measured on this machine, in the profile format the
operator reads (``ModelProfile``): ``base + batch x (per_seq + ctx/1000 x per_kctx)`` fitted by least
squares, the measured rows kept as ``points``.

An experts group is timed on the tokens the router actually sends it out of a batch (the skew), so a
popular group's curve is steeper than a cold one's.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from gensched.autoscale.profiles import ModelProfile, OperatorProfile
from gensched_workloads.moe import MoEDecoder

GIB = 1024**3


def _time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def _fit(rows: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    a = np.array([[1.0, b, b * c / 1000] for b, c, _ in rows])
    coef, *_ = np.linalg.lstsq(a, np.array([r[2] for r in rows]), rcond=None)
    return float(max(coef[0], 0.0)), float(max(coef[1], 0.0)), float(max(coef[2], 0.0))


@torch.no_grad()
def measured(model: MoEDecoder, groups: list[tuple[str, int, int]], batches: list[int], contexts: list[int],
             repeats: int = 3, names: tuple[str, str] = ("embedding", "attention")) -> ModelProfile:
    torch.set_num_threads(1)
    cfg = model.cfg
    rows: dict[str, list[tuple[float, float, float]]] = {n: [] for n in (*names, *(g[0] for g in groups))}
    g = torch.Generator().manual_seed(0)
    for b in batches:
        ids = torch.randint(0, 256, (b, 1), generator=g)
        rows[names[0]].append((float(b), 0.0, _time(lambda ids=ids: model.logits(model.embed(ids, 0)), repeats)))
        for ctx in contexts:
            x = model.embed(ids, ctx)
            shape = (b, cfg.n_heads, ctx, cfg.head_dim)
            past = [(torch.randn(shape, generator=g), torch.randn(shape, generator=g)) for _ in model.layers]

            def attn(x: torch.Tensor = x, past: list = past) -> None:
                for i, layer in enumerate(model.layers):
                    layer.attention(x, past[i])

            rows[names[1]].append((float(b), float(ctx), _time(attn, repeats)))
        _, normed, e_ids, w, _ = model.layers[0].attention(model.embed(ids, 0), None)
        for name, first, last in groups:
            def experts(first: int = first, last: int = last, normed: torch.Tensor = normed,
                        e_ids: torch.Tensor = e_ids, w: torch.Tensor = w) -> None:
                for layer in model.layers:
                    layer.expert_outputs(normed, e_ids, w, first, last)

            rows[name].append((float(b), 0.0, _time(experts, repeats)))
    params = {names[0]: model.tok.weight.numel() + model.pos.weight.numel() + model.head.weight.numel(),
              names[1]: sum(p.numel() for layer in model.layers for m in (layer.ln1, layer.qkv, layer.proj, layer.ln2,
                                                                           layer.router) for p in m.parameters())}
    for name, first, last in groups:
        params[name] = sum(p.numel() for layer in model.layers for e in range(first, last + 1)
                           for p in layer.experts[e].parameters())
    ops = []
    for name, r in rows.items():
        base, per_seq, per_kctx = _fit(r)
        kind = "Embedding" if name == names[0] else "Attention" if name == names[1] else "Experts"
        kv = cfg.n_layers * 2 * cfg.d_model * 4 / GIB if kind == "Attention" else 0.0
        ops.append(OperatorProfile(name, params[name] * 4 / GIB, kv, base, per_seq, per_kctx, 0.0, 0.0, 0.0,
                                   type=kind, group="experts" if kind == "Experts" else "", points=tuple(r)))
    return ModelProfile(model=f"MoE-{cfg.n_layers}x{cfg.d_model}x{cfg.n_experts}", gpu="cpu", gpu_memory_gib=80.0,
                        gpu_watts=0.0, idle_watts=0.0, operators=tuple(ops), modelled=False,
                        source=f"measured on cpu with torch {torch.__version__}, 1 thread, median of {repeats}",
                        notes=[f"expert load on random tokens: skew {cfg.skew}"])
