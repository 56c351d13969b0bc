"""The dense decoder as a Ray Serve application of typed operators:

- by type: ``Embedding`` (embedding and LM head), ``Attention`` (every layer's attention half, the KV
  cache passed by the caller) and ``FFN`` (every layer's feed-forward half), chained per layer by an
  ingress;
- by phase: ``Model`` operators with ``phase`` ``Prefill`` (runs the prompt, returns the KV cache and the
  first logits) and ``Decode`` (generates the tokens from that cache): prefill/decode disaggregation.

Operators are stateless between calls, so any replica serves any request; the streamed tokens equal
the unsplit model's (``model.generate``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import torch
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import StreamingResponse

from gensched_workloads.model import EOS, KV, DecoderLM, decode, encode
from gensched_workloads.serve_app import load_model


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class EmbeddingOp:
    def __init__(self, args: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        self.m = load_model(args)

    @torch.no_grad()
    def embed(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        return self.m.embed(ids, start)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.m.logits(x)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class AttentionOp:
    def __init__(self, args: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        self.m = load_model(args)

    @torch.no_grad()
    def __call__(self, layer: int, x: torch.Tensor, past: KV | None) -> tuple[torch.Tensor, KV]:
        return self.m.blocks[layer].attend(x, past)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class FFNOp:
    def __init__(self, args: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        self.m = load_model(args)

    @torch.no_grad()
    def __call__(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return self.m.blocks[layer].mlp(x)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class PrefillOp:
    def __init__(self, args: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        self.m = load_model(args)

    @torch.no_grad()
    def __call__(self, prompt: list[int]) -> tuple[torch.Tensor, list[KV]]:
        logits, past = self.m(torch.tensor([prompt]))
        return logits[:, -1:], past


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class DecodeOp:
    def __init__(self, args: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        self.m = load_model(args)

    @torch.no_grad()
    def __call__(self, logits: torch.Tensor, past: list[KV], pos: int, max_new: int) -> list[int]:
        out: list[int] = []
        while True:
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            if nxt == EOS or pos >= self.m.cfg.max_seq or len(out) == max_new:
                return out
            logits, past = self.m(torch.tensor([[nxt]]), past, start=pos)
            pos += 1


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class DenseIngress:
    def __init__(self, handles: dict[str, DeploymentHandle], n_layers: int, max_seq: int) -> None:
        self.h, self.n_layers, self.max_seq = handles, n_layers, max_seq

    async def _step(self, ids: torch.Tensor, pos: int, caches: list) -> torch.Tensor:
        x = await self.h["Embedding"].embed.remote(ids, pos)
        for layer in range(self.n_layers):
            x, caches[layer] = await self.h["Attention"].remote(layer, x, caches[layer])
            x = await self.h["FFN"].remote(layer, x)
        return await self.h["Embedding"].logits.remote(x)

    async def generate(self, prompt: list[int], max_new: int) -> list[int]:
        if "Prefill" in self.h:
            logits, past = await self.h["Prefill"].remote(prompt)
            return await self.h["Decode"].remote(logits, past, len(prompt), max_new)
        caches: list = [None] * self.n_layers
        logits = await self._step(torch.tensor([prompt]), 0, caches)
        pos, out = len(prompt), []
        while True:
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            if nxt == EOS or pos >= self.max_seq or len(out) == max_new:
                return out
            logits = await self._step(torch.tensor([[nxt]]), pos, caches)
            pos += 1

    async def __call__(self, request: Request) -> StreamingResponse:
        body = await request.json()
        prompt = body.get("prompt_ids") or encode(str(body.get("prompt", "")))
        tokens = await self.generate(prompt, int(body.get("max_tokens", 16)))

        async def stream() -> AsyncIterator[str]:
            for tok in tokens:
                yield json.dumps({"token": tok, "text": decode([tok])}) + "\n"

        return StreamingResponse(stream(), media_type="application/x-ndjson")


DEPLOYMENTS = {"Embedding": EmbeddingOp, "Attention": AttentionOp, "FFN": FFNOp}


def build_dense_app(args: dict[str, Any]) -> serve.Application:
    cfg: DecoderLM = load_model(args)
    replicas = args.get("replicas") or {}
    cpus = float(args.get("num_cpus", 0.25))
    handles: dict[str, Any] = {}
    for o in args["operators"]:
        kind = o.get("phase") if o.get("type") == "Model" else o.get("type")
        cls = {**DEPLOYMENTS, "Prefill": PrefillOp, "Decode": DecodeOp}.get(kind or "")
        if cls is None:
            raise ValueError(f"args.operators[{o['name']}]: type {o.get('type')} phase {o.get('phase')} is not "
                             "served by the dense app (Embedding, Attention, FFN, or Model with a phase)")
        handles[kind] = cls.options(name=o["name"], num_replicas=int(replicas.get(o["name"], 1)),
                                    ray_actor_options={"num_cpus": cpus}).bind(args)
    need = ({"Prefill", "Decode"}, {"Embedding", "Attention", "FFN"})
    if set(handles) not in need:
        raise ValueError(f"args.operators: give Embedding, Attention and FFN, or Model Prefill and Decode; "
                         f"got {sorted(handles)}")
    return DenseIngress.options(ray_actor_options={"num_cpus": cpus}).bind(handles, cfg.cfg.n_layers, cfg.cfg.max_seq)
