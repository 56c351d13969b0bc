"""Latency curves of the diffusion pipeline's operators (text encoder, denoiser, ControlNet, VAE
decoder) against batch size and resolution, in the profile format the operator reads
(``gensched.autoscale.profiles.ModelProfile``; ``ctx`` = latent tokens, 77 prompt tokens for the
text encoder).

- ``measured``: timed on this machine's CPU with real tensors (medians of ``repeats`` runs).
- ``modelled``: counted on the meta device and priced on published GPU peaks
  (``roofline_count``): the numbers the simulator uses for A100 / H100.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from gensched.autoscale.profiles import ModelProfile, OperatorProfile
from gensched.autoscale.roofline import GPUS
from gensched_workloads import diffusion as d

GIB = 1024**3
OPERATORS = ("text-encoder", "denoiser", "controlnet", "vae-decoder")
TYPES = {"text-encoder": "TextEncoder", "denoiser": "Denoiser", "controlnet": "ControlNet",
         "vae-decoder": "VAEDecoder"}
ACT_PEAK = 4.0  # live activations at the peak, in units of the largest one (modelled)


def _modules(cfg: d.PipelineConfig, device: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    with torch.device(device):
        mods = {"text-encoder": d.text_encoder(cfg), "denoiser": d.unet(cfg), "controlnet": d.controlnet(cfg),
                "vae-decoder": d.vae(cfg)}
    return {k: m.to(dtype) for k, m in mods.items()}


def _params(name: str, m: torch.nn.Module) -> int:
    if name == "vae-decoder":  # only the decoder half serves images
        return sum(p.numel() for p in (*m.decoder.parameters(), *m.post_quant_conv.parameters()))
    return sum(p.numel() for p in m.parameters())


def _call(name: str, m: torch.nn.Module, cfg: d.PipelineConfig, batch: int, pixels: int, device: str,
          dtype: torch.dtype) -> Callable[[], object]:
    hidden = int(cfg.text["hidden_size"])
    lat = torch.randn((batch, *cfg.latent_shape(pixels)), device=device, dtype=dtype)
    emb = torch.randn((batch, cfg.tokens, hidden), device=device, dtype=dtype)
    if name == "text-encoder":
        ids = torch.zeros((batch, cfg.tokens), dtype=torch.long, device=device)
        return lambda: m(ids)
    if name == "denoiser":
        return lambda: m(lat, 10, encoder_hidden_states=emb)
    if name == "controlnet":
        img = torch.rand((batch, 3, pixels, pixels), device=device, dtype=dtype)
        return lambda: m(lat, 10, encoder_hidden_states=emb, controlnet_cond=img)
    return lambda: m.decode(lat)


def _ctx(name: str, cfg: d.PipelineConfig, pixels: int) -> float:
    side = pixels // cfg.vae_factor
    return float(cfg.tokens) if name == "text-encoder" else float(side * side)


def _fit(points: list[tuple[float, ...]]) -> tuple[float, float, float]:
    """Least squares ``total = base + batch x (per_seq + ctx/1000 x per_kctx)`` (for ``targets.py``)."""
    a = np.array([[1.0, p[0], p[0] * p[1] / 1000] for p in points])
    coef, *_ = np.linalg.lstsq(a, np.array([p[2] for p in points]), rcond=None)
    return float(max(coef[0], 0.0)), float(max(coef[1], 0.0)), float(max(coef[2], 0.0))


def _profile(cfg: d.PipelineConfig, gpu: str, memory_gib: float, watts: float, idle: float, modelled: bool,
             source: str, rows: dict[str, list[tuple[float, ...]]], weights: dict[str, float],
             act: dict[str, float], notes: list[str]) -> ModelProfile:
    ops = []
    for name in OPERATORS:
        base, per_seq, per_kctx = _fit(rows[name])
        ops.append(OperatorProfile(name, weights[name], 0.0, base, per_seq, per_kctx, 0.0, 0.0, 0.0,
                                   type=TYPES[name], points=tuple(rows[name]), act_gib_per_kctx=act[name]))
    return ModelProfile(model=f"diffusion-{cfg.name}", gpu=gpu, gpu_memory_gib=memory_gib, gpu_watts=watts,
                        idle_watts=idle, operators=tuple(ops), modelled=modelled, source=source, notes=notes)


def modelled(cfg: d.PipelineConfig, batches: list[int], pixels: list[int]) -> dict[str, ModelProfile]:
    """Per GPU model of ``roofline.GPUS``: fp16 operators priced from their counted kernels."""
    from gensched_workloads.roofline_count import DISPATCH_US, count

    mods = _modules(cfg, "meta", torch.float16)
    rows: dict[str, dict[str, list[tuple[float, ...]]]] = {g: {n: [] for n in OPERATORS} for g in GPUS}
    act: dict[str, float] = {}
    for name, m in mods.items():
        for px in pixels if name != "text-encoder" else pixels[:1]:
            for b in batches:
                c = count(_call(name, m, cfg, b, px, "meta", torch.float16))
                if b == 1 and px == pixels[0]:
                    act[name] = ACT_PEAK * c.largest_activation / GIB / (_ctx(name, cfg, px) / 1000)
                for g in GPUS:
                    comp, mem = c.compute_ms.get(g, 0.0), c.memory_ms.get(g, 0.0)
                    rows[g][name].append((float(b), _ctx(name, cfg, px), max(comp + mem, c.host_ms), comp, mem,
                                          c.host_ms))
    weights = {n: _params(n, m) * 2 / GIB for n, m in mods.items()}
    out = {}
    for g, spec in GPUS.items():
        out[g] = _profile(cfg, spec.name, spec.memory_gib, spec.watts, spec.idle_watts, True,
                          f"roofline per kernel (meta-device count): {spec.tflops:g} TFLOP/s x 0.6, "
                          f"{spec.tb_per_s:g} TB/s x 0.8, {DISPATCH_US:g} us host time per kernel, fp16",
                          rows[g], weights, act, [f"{cfg.name} shapes, batches {batches}, pixels {pixels}"])
    return out


def _time(fn: Callable[[], object], repeats: int) -> float:
    t0 = time.perf_counter()
    fn()  # warm-up; a call of seconds is its own sample (first-call costs are negligible beside it)
    first = (time.perf_counter() - t0) * 1000
    if first > 2000:
        return first
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


@torch.no_grad()
def measured(cfg: d.PipelineConfig, grid: list[tuple[int, int]], repeats: int = 3,
             threads: int = 1, say: Callable[[str], None] = lambda s: None) -> ModelProfile:
    """Timed on this CPU (fp32, ``threads`` torch threads) at each (batch, pixels) of ``grid``."""
    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    mods = _modules(cfg, "cpu", torch.float32)
    rows: dict[str, list[tuple[float, ...]]] = {n: [] for n in OPERATORS}
    pixels = sorted({px for _, px in grid})
    for name, m in mods.items():
        for b, px in grid:
            if name == "text-encoder" and px != pixels[0]:
                continue  # the prompt does not depend on the image size
            ms = _time(_call(name, m, cfg, b, px, "cpu", torch.float32), repeats)
            rows[name].append((float(b), _ctx(name, cfg, px), ms))
            say(f"{name} batch {b} {px}px: {ms:.1f} ms")
    weights = {n: _params(n, m) * 4 / GIB for n, m in mods.items()}
    return _profile(cfg, "cpu", 0.0, 0.0, 0.0, False,
                    f"measured on cpu with torch {torch.__version__}, {threads} thread(s), fp32, median of {repeats}",
                    rows, weights, dict.fromkeys(OPERATORS, 0.0),
                    [f"{cfg.name} shapes, (batch, pixels) {grid}",
                     f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
                     f"({os.cpu_count()} CPUs): other work on the machine slows the timings"])
