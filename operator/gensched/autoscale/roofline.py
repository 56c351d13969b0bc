"""Modelled (not measured) operator profiles of Llama-style models on A100 and H100 GPUs.

Roofline, additive (no compute/memory overlap, so on the safe side): a decode step reads the
operator's weights once per step (base) and each sequence's KV cache (per 1k context), and
computes 2 FLOPs per parameter per sequence; prefill computes 2 FLOPs per parameter per token.
Achieved fractions of peak: 60% of FLOP/s, 80% of bandwidth. Peaks are the vendors' published
dense bf16 numbers. Operators follow the attention/FFN split: ``embed``, ``attention`` (all
layers), ``ffn`` (all layers), ``lm_head``; separate deployments pay a hop per layer boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

from gensched.autoscale.profiles import ModelProfile, OperatorProfile

GIB = 1024**3
COMPUTE_EFF, BW_EFF = 0.6, 0.8
LAUNCH_MS = 0.02  # kernel launches per operator per step, per layer
HOP_MS = 0.015  # per activation hand-off between deployments (NVLink / RDMA latency)


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

    def op(name: str, params: float, layers: int, kv: float, ctx_flops: float, hops: int) -> OperatorProfile:
        w = params * bytes_per_param
        return OperatorProfile(
            name=name, weights_gib=w / GIB, kv_gib_per_token=kv / GIB,
            step_base_ms=w / bytes_ms + LAUNCH_MS * max(layers, 1),
            step_per_seq_ms=2 * params / flops_ms + hops * act_bytes / bytes_ms,
            step_per_kctx_ms=1000 * (kv / bytes_ms + ctx_flops / flops_ms),
            prefill_base_ms=w / bytes_ms + LAUNCH_MS * max(layers, 1),
            prefill_per_token_ms=2 * params / flops_ms + ctx_flops * 500 / flops_ms,  # avg half of ~1k context
            hop_ms=hops * HOP_MS)

    ops = (
        op("embed", emb_params * 0.0 + s.d_model * 16, 0, 0, 0, 1),  # a gather: reads one row per token
        op("attention", attn_params, s.layers, kv_bytes_tok, attn_ctx_flops, s.layers),
        op("ffn", ffn_params, s.layers, 0, 0, s.layers),
        op("lm_head", emb_params, 1, 0, 0, 0),
    )
    # The embedding table lives with the embed operator even though a step reads only a few rows.
    emb = ops[0]
    ops = (OperatorProfile(emb.name, emb_params * bytes_per_param / GIB, 0.0, emb.step_base_ms, emb.step_per_seq_ms,
                           0.0, emb.prefill_base_ms, emb.prefill_per_token_ms, emb.hop_ms), *ops[1:])
    return ModelProfile(model=model, gpu=g.name, gpu_memory_gib=g.memory_gib, gpu_watts=g.watts,
                        idle_watts=g.idle_watts, operators=ops, modelled=True,
                        source=f"roofline: {g.tflops:g} TFLOP/s x {COMPUTE_EFF}, {g.tb_per_s:g} TB/s x {BW_EFF}")
