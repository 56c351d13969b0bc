"""Modelled (not measured) operator profiles of Llama-style models on A100 and H100 GPUs.

Roofline, additive (no compute/memory overlap, so on the safe side): a decode step reads the
operator's weights once per step (base) and each sequence's KV cache (per 1k context), and
computes 2 FLOPs per parameter per sequence; prefill computes 2 FLOPs per parameter per token.
Achieved fractions of peak: 60% of FLOP/s, 80% of bandwidth. Peaks are the vendors' published
dense bf16 numbers. Operators follow the attention/FFN split: ``embed``, ``attention`` (all
layers), ``ffn`` (all layers), ``lm_head``; separate deployments pay a hop per layer boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gensched.autoscale.profiles import ModelProfile, OperatorProfile

GIB = 1024**3
COMPUTE_EFF, BW_EFF = 0.6, 0.8
LAUNCH_MS = 0.02  # kernel launches per operator per step, per layer
HOP_MS = 0.015  # per activation hand-off between deployments (NVLink / RDMA latency)
LINK_GB_S = 450 * 0.7  # NVLink between GPUs of a node, achieved: activations between deployments, all-reduces
ALLREDUCE_MS = 0.01  # latency of one all-reduce across tensor-parallel GPUs


@dataclass(frozen=True)
class Gpu:
    name: str
    tflops: float  # dense bf16
    tb_per_s: float
    memory_gib: float
    watts: float
    idle_watts: float


GPUS = {
    "a100": Gpu("NVIDIA-A100-SXM4-80GB", 312.0, 2.039, 80.0, 400.0, 60.0),
    "h100": Gpu("NVIDIA-H100-80GB-HBM3", 989.0, 3.35, 80.0, 700.0, 90.0),
}


@dataclass(frozen=True)
class Shape:
    d_model: int
    layers: int
    d_ff: int
    heads: int
    kv_heads: int
    vocab: int


SHAPES = {
    "llama-7b": Shape(4096, 32, 11008, 32, 32, 32000),
    "llama-13b": Shape(5120, 40, 13824, 40, 40, 32000),
    "llama-70b": Shape(8192, 80, 28672, 64, 8, 32000),
}


def profile(model: str, gpu: str, bytes_per_param: float = 2.0) -> ModelProfile:
    if model not in SHAPES:
        raise ValueError(f"unknown model {model!r}: use one of {sorted(SHAPES)}")
    if gpu not in GPUS:
        raise ValueError(f"unknown gpu {gpu!r}: use one of {sorted(GPUS)}")
    s, g = SHAPES[model], GPUS[gpu]
    flops_ms = g.tflops * 1e12 * COMPUTE_EFF / 1000  # FLOP per ms
    bytes_ms = g.tb_per_s * 1e12 * BW_EFF / 1000  # byte per ms
    head_dim = s.d_model // s.heads
    attn_params = s.layers * (2 * s.d_model * s.d_model + 2 * s.d_model * s.kv_heads * head_dim)
    ffn_params = s.layers * 3 * s.d_model * s.d_ff
    emb_params = s.vocab * s.d_model
    kv_bytes_tok = s.layers * 2 * s.kv_heads * head_dim * 2  # K and V, bf16
    # attention scores and weighted sum: 4 x d_model FLOPs per layer per context token
    attn_ctx_flops = s.layers * 4 * s.d_model
    act_bytes = s.d_model * 2

    link_ms = LINK_GB_S * 1e9 / 1000  # byte per ms

    def op(name: str, params: float, layers: int, kv: float, ctx_flops: float, hops: int, kind: str,
           allreduce: bool = True) -> OperatorProfile:
        w = params * bytes_per_param
        return OperatorProfile(
            name=name, weights_gib=w / GIB, kv_gib_per_token=kv / GIB,
            step_base_ms=w / bytes_ms + LAUNCH_MS * max(layers, 1),
            step_per_seq_ms=2 * params / flops_ms + hops * act_bytes / link_ms,
            step_per_kctx_ms=1000 * (kv / bytes_ms + ctx_flops / flops_ms),
            prefill_base_ms=w / bytes_ms + LAUNCH_MS * max(layers, 1),
            prefill_per_token_ms=2 * params / flops_ms + ctx_flops * 500 / flops_ms,  # avg half of ~1k context
            hop_ms=hops * HOP_MS, type=kind,
            # one all-reduce per layer (ring: ~2x the activations per GPU) when a replica spans GPUs
            tp_base_ms=layers * ALLREDUCE_MS if allreduce else 0.0,
            tp_per_seq_ms=layers * 2 * act_bytes / link_ms if allreduce else 0.0)

    ops = (
        op("embed", emb_params * 0.0 + s.d_model * 16, 0, 0, 0, 1, "Embedding", False),  # a gather: one row a token
        op("attention", attn_params, s.layers, kv_bytes_tok, attn_ctx_flops, s.layers, "Attention"),
        op("ffn", ffn_params, s.layers, 0, 0, s.layers, "FFN"),
        op("lm_head", emb_params, 1, 0, 0, 0, "Embedding", False),
    )
    # The embedding table lives with the embed operator even though a step reads only a few rows.
    emb = ops[0]
    ops = (replace(emb, weights_gib=emb_params * bytes_per_param / GIB), *ops[1:])
    return ModelProfile(model=model, gpu=g.name, gpu_memory_gib=g.memory_gib, gpu_watts=g.watts,
                        idle_watts=g.idle_watts, operators=ops, modelled=True,
                        source=f"roofline: {g.tflops:g} TFLOP/s x {COMPUTE_EFF}, {g.tb_per_s:g} TB/s x {BW_EFF}")


def diffusion_profile(gpu: str) -> ModelProfile:
    """Stable Diffusion 1.5's operators (text encoder, denoiser, ControlNet, VAE decoder) on ``gpu``:
    modelled per kernel from published peaks (``diffusion_profiles.py``, written by
    benchmarks/autoscale_profiles.py)."""
    from gensched.autoscale.diffusion_profiles import DATA

    if gpu not in DATA:
        raise ValueError(f"unknown gpu {gpu!r}: use one of {sorted(DATA)}")
    import json

    return ModelProfile.from_json(json.dumps(DATA[gpu]), where=f"built-in diffusion profile for {gpu}")


@dataclass(frozen=True)
class MoeShape:
    d_model: int
    layers: int
    d_ff: int  # per expert
    heads: int
    kv_heads: int
    vocab: int
    experts: int
    top_k: int


MOE_SHAPES = {"mixtral-8x7b": MoeShape(4096, 32, 14336, 32, 8, 32000, 8, 2)}


def moe_profile(model: str, gpu: str, popularity: tuple[float, ...], bytes_per_param: float = 2.0) -> ModelProfile:
    """A mixture-of-experts decoder (Mixtral shapes) as operators: ``embed``, ``attention`` (with the
    router and the KV cache), one ``expert-E`` per expert (that expert of every layer; the experts of
    a layer run side by side, group ``experts``), ``lm_head``. ``popularity``: share of routed tokens
    per expert; expert E computes ``top_k x popularity[E]`` tokens per sequence and reads all its
    weights every step (at the batch sizes served, every expert gets tokens)."""
    if model not in MOE_SHAPES:
        raise ValueError(f"unknown MoE model {model!r}: use one of {sorted(MOE_SHAPES)}")
    if gpu not in GPUS:
        raise ValueError(f"unknown gpu {gpu!r}: use one of {sorted(GPUS)}")
    s, g = MOE_SHAPES[model], GPUS[gpu]
    if len(popularity) != s.experts or abs(sum(popularity) - 1) > 1e-6:
        raise ValueError(f"popularity must give {s.experts} shares that sum to 1")
    flops_ms = g.tflops * 1e12 * COMPUTE_EFF / 1000
    bytes_ms = g.tb_per_s * 1e12 * BW_EFF / 1000
    link_ms = LINK_GB_S * 1e9 / 1000
    head_dim = s.d_model // s.heads
    attn = s.layers * (2 * s.d_model * s.d_model + 2 * s.d_model * s.kv_heads * head_dim + s.d_model * s.experts)
    expert = s.layers * 3 * s.d_model * s.d_ff
    emb = s.vocab * s.d_model
    kv = s.layers * 2 * s.kv_heads * head_dim * 2
    act = s.d_model * 2
    ctx_flops = s.layers * 4 * s.d_model

    def mk(name: str, params: float, kind: str, per_token_params: float, layers: int, kv_b: float = 0.0,
           cflops: float = 0.0, hops: int = 0, group: str = "", tokens: float = 1.0) -> OperatorProfile:
        w = params * bytes_per_param
        return OperatorProfile(
            name=name, weights_gib=w / GIB, kv_gib_per_token=kv_b / GIB,
            step_base_ms=w / bytes_ms + LAUNCH_MS * max(layers, 1),
            step_per_seq_ms=2 * per_token_params / flops_ms + tokens * layers * 2 * act / link_ms,
            step_per_kctx_ms=1000 * (kv_b / bytes_ms + cflops / flops_ms),
            prefill_base_ms=w / bytes_ms + LAUNCH_MS * max(layers, 1),
            prefill_per_token_ms=2 * per_token_params / flops_ms + cflops * 500 / flops_ms,
            hop_ms=hops * HOP_MS, type=kind, group=group,
            # tensor parallel: one all-reduce per layer for attention and one for the whole MoE block
            tp_base_ms=layers * ALLREDUCE_MS * (1 / s.experts if group else 1),
            tp_per_seq_ms=tokens / (s.top_k if group else 1) * layers * 2 * act / link_ms)

    ops = [mk("embed", emb, "Embedding", s.d_model * 16, 0),
           mk("attention", attn, "Attention", attn, s.layers, kv, ctx_flops, hops=2 * s.layers)]
    for e, p in enumerate(popularity):
        share = s.top_k * p  # tokens of each sequence this expert computes, per layer
        ops.append(mk(f"expert-{e}", expert, "Experts", expert * share, s.layers, group="experts", tokens=share))
    ops.append(mk("lm_head", emb, "Embedding", emb, 1))
    ops[0] = replace(ops[0], step_per_seq_ms=2 * s.d_model * 16 / flops_ms, tp_base_ms=0.0, tp_per_seq_ms=0.0)
    return ModelProfile(model=model, gpu=g.name, gpu_memory_gib=g.memory_gib, gpu_watts=g.watts,
                        idle_watts=g.idle_watts, operators=tuple(ops), modelled=True,
                        source=f"roofline: {g.tflops:g} TFLOP/s x {COMPUTE_EFF}, {g.tb_per_s:g} TB/s x {BW_EFF}; "
                               f"expert popularity {', '.join(f'{p:.3f}' for p in popularity)}")
