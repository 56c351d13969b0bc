"""A small mixture-of-experts decoder (Mixtral-shaped at toy size: pre-norm causal attention with a
KV cache, then a router sending each token to its top-2 of 8 SwiGLU experts) with routing skew, and
its split into the typed operators gensched scales on their own, the MegaScale-Infer way:

- ``Embedding``: token + position embedding, final norm and LM head;
- ``Attention``: every layer's attention (and the norm and router before the experts); holds no state:
  the caller passes each layer's KV cache;
- ``Experts``: a range of experts of every layer; given the normed hidden states and the routing it
  returns its experts' weighted outputs, summed.

Routing skew: the router's bias is ``log(popularity)`` with popularity Zipf(``skew``) over the experts,
so some experts get most tokens (as domain-specific traffic does). Random weights from a seed; no
download.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from gensched_workloads.model import BOS, EOS

KV = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class MoEConfig:
    vocab: int = 260
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 96  # per expert
    n_experts: int = 8
    top_k: int = 2
    max_seq: int = 256
    skew: float = 1.2  # Zipf exponent of the experts' popularity (0: uniform)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def popularity(self) -> list[float]:
        w = [(i + 1) ** -self.skew for i in range(self.n_experts)]
        return [x / sum(w) for x in w]


class Expert(nn.Module):
    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.w3 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.w2 = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(nn.functional.silu(self.w1(x)) * self.w3(x))


class MoELayer(nn.Module):
    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.router = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)
        self.register_buffer("skew_bias", torch.log(torch.tensor(cfg.popularity())))
        self.experts = nn.ModuleList(Expert(cfg) for _ in range(cfg.n_experts))

    def attention(self, x: torch.Tensor, past: KV | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                    torch.Tensor, KV]:
        """Attention with the residual, then the norm and routing the experts need:
        (hidden, normed, expert ids [.., top_k], weights [.., top_k], new KV)."""
        b, t, d = x.shape
        h, hd = self.cfg.n_heads, self.cfg.head_dim
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, h, hd).transpose(1, 2) for z in (q, k, v))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        past_len = k.shape[2] - t
        mask = torch.ones(t, k.shape[2], dtype=torch.bool).tril(diagonal=past_len)
        att = ((q @ k.transpose(-2, -1)) / math.sqrt(hd)).masked_fill(~mask, float("-inf")).softmax(dim=-1)
        hidden = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        normed = self.ln2(hidden)
        logits = self.router(normed) + self.skew_bias
        weights, ids = logits.topk(self.cfg.top_k, dim=-1)
        return hidden, normed, ids, weights.softmax(dim=-1), (k, v)

    def expert_outputs(self, normed: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, first: int,
                       last: int) -> torch.Tensor:
        """Weighted outputs of experts ``first..last`` for the tokens routed to them (zeros elsewhere)."""
        out = torch.zeros_like(normed)
        for e in range(first, last + 1):
            hit = ids == e  # [.., top_k]
            if not hit.any():
                continue
            w = (weights * hit).sum(dim=-1, keepdim=True)  # this expert's weight per token (0 if not routed)
            rows = hit.any(dim=-1)
            out[rows] = out[rows] + w[rows] * self.experts[e](normed[rows])
        return out


class MoEDecoder(nn.Module):
    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_seq, cfg.d_model)
        self.layers = nn.ModuleList(MoELayer(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)

    def embed(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        pos = torch.arange(start, start + ids.shape[1])
        return self.tok(ids) + self.pos(pos)[None]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln_f(x))

    def forward(self, ids: torch.Tensor, past: list[KV] | None = None, start: int = 0
                ) -> tuple[torch.Tensor, list[KV]]:
        x = self.embed(ids, start)
        new: list[KV] = []
        for i, layer in enumerate(self.layers):
            hidden, normed, e_ids, w, kv = layer.attention(x, past[i] if past else None)
            x = hidden + layer.expert_outputs(normed, e_ids, w, 0, self.cfg.n_experts - 1)
            new.append(kv)
        return self.logits(x), new

    @classmethod
    def seeded(cls, cfg: MoEConfig | None = None, seed: int = 0) -> MoEDecoder:
        torch.manual_seed(seed)
        return cls(cfg or MoEConfig()).eval()


@torch.no_grad()
def generate(model: MoEDecoder, prompt: list[int], max_new: int) -> list[int]:
    """Greedy decoding with a KV cache: the reference the split serving path must match."""
    logits, past = model(torch.tensor([prompt]))
    out: list[int] = []
    pos = len(prompt)
    for _ in range(max_new):
        nxt = int(logits[0, -1].argmax())
        out.append(nxt)
        if nxt == EOS or pos >= model.cfg.max_seq or len(out) == max_new:
            break
        logits, past = model(torch.tensor([[nxt]]), past, start=pos)
        pos += 1
    return out


# -- the typed operators (stateless: any replica serves any step) -------------------------------------

class EmbeddingOp:
    def __init__(self, model: MoEDecoder) -> None:
        self.m = model

    @torch.no_grad()
    def embed(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        return self.m.embed(ids, start)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.m.logits(x)


class AttentionOp:
    def __init__(self, model: MoEDecoder) -> None:
        self.m = model

    @torch.no_grad()
    def __call__(self, layer: int, x: torch.Tensor, past: KV | None) -> tuple:
        return self.m.layers[layer].attention(x, past)


class ExpertsOp:
    def __init__(self, model: MoEDecoder, first: int, last: int) -> None:
        self.m, self.first, self.last = model, first, last

    @torch.no_grad()
    def __call__(self, layer: int, normed: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.m.layers[layer].expert_outputs(normed, ids, weights, self.first, self.last)


@torch.no_grad()
def generate_split(emb: EmbeddingOp, attn: AttentionOp, experts: list[ExpertsOp], prompt: list[int],
                   max_new: int, n_layers: int, max_seq: int) -> list[int]:
    """Greedy decoding through the typed operators (the serving path, without Ray)."""
    caches: list[KV | None] = [None] * n_layers

    def step(ids: torch.Tensor, pos: int) -> torch.Tensor:
        x = emb.embed(ids, pos)
        for layer in range(n_layers):
            hidden, normed, e_ids, w, caches[layer] = attn(layer, x, caches[layer])
            x = hidden + sum(op(layer, normed, e_ids, w) for op in experts)
        return emb.logits(x)

    logits = step(torch.tensor([prompt]), 0)
    pos, out = len(prompt), []
    while True:
        nxt = int(logits[0, -1].argmax())
        out.append(nxt)
        if nxt == EOS or pos >= max_seq or len(out) == max_new:
            return out
        logits = step(torch.tensor([[nxt]]), pos)
        pos += 1


def expert_load(model: MoEDecoder, tokens: int = 2048, seed: int = 1) -> list[float]:
    """Share of routed tokens per expert on random inputs (layer 0): the skew the router produces."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (1, min(tokens, model.cfg.max_seq)), generator=g)
    with torch.no_grad():
        x = model.embed(ids, 0)
        _, _, e_ids, _, _ = model.layers[0].attention(x, None)
    counts = torch.bincount(e_ids.flatten(), minlength=model.cfg.n_experts).float()
    return (counts / counts.sum()).tolist()


__all__ = ["BOS", "EOS", "AttentionOp", "EmbeddingOp", "ExpertsOp", "MoEConfig", "MoEDecoder", "expert_load",
           "generate", "generate_split"]
