"""The mixture-of-experts decoder as a Ray Serve application of typed operators: ``Embedding``
(embedding and LM head), ``Attention`` (every layer's attention, norm and router) and ``Experts``
deployments (each a range of experts), chained by an ingress that streams tokens. Per layer the
ingress calls attention, then every experts deployment at once, and adds their outputs; operators are
stateless (the ingress carries the KV caches), so any replica serves any step.

``args``: ``family: MoE``, ``operators`` [{name, type, experts: [first, last]}], ``config`` (MoEConfig
fields), ``seed``; local runs: ``replicas``, ``num_cpus``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import torch
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import StreamingResponse

from gensched_workloads.model import decode, encode
from gensched_workloads.moe import EOS, AttentionOp, EmbeddingOp, ExpertsOp, MoEConfig, MoEDecoder


def load_moe(args: dict[str, Any]) -> MoEDecoder:
    return MoEDecoder.seeded(MoEConfig(**(args.get("config") or {})), seed=int(args.get("seed", 0)))


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class EmbeddingDeployment:
    def __init__(self, args: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        self.op = EmbeddingOp(load_moe(args))

    async def embed(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        return self.op.embed(ids, start)

    async def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.logits(x)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class AttentionDeployment:
    def __init__(self, args: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        self.op = AttentionOp(load_moe(args))

    async def __call__(self, layer: int, x: torch.Tensor, past: tuple | None) -> tuple:
        return self.op(layer, x, past)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class ExpertsDeployment:
    def __init__(self, args: dict[str, Any], first: int, last: int) -> None:
        torch.set_num_threads(1)
        self.op = ExpertsOp(load_moe(args), first, last)

    async def __call__(self, layer: int, normed: torch.Tensor, ids: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.op(layer, normed, ids, w)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class MoEIngress:
    def __init__(self, emb: DeploymentHandle, attn: DeploymentHandle, experts: list[DeploymentHandle],
                 n_layers: int, max_seq: int) -> None:
        self.emb, self.attn, self.experts = emb, attn, experts
        self.n_layers, self.max_seq = n_layers, max_seq

    async def _step(self, ids: torch.Tensor, pos: int, caches: list) -> torch.Tensor:
        x = await self.emb.embed.remote(ids, pos)
        for layer in range(self.n_layers):
            hidden, normed, e_ids, w, caches[layer] = await self.attn.remote(layer, x, caches[layer])
            parts = await asyncio.gather(*(e.remote(layer, normed, e_ids, w) for e in self.experts))
            x = hidden + sum(parts)
        return await self.emb.logits.remote(x)

    async def tokens(self, prompt: list[int], max_new: int) -> AsyncIterator[int]:
        caches: list = [None] * self.n_layers
        logits = await self._step(torch.tensor([prompt]), 0, caches)
        pos, n = len(prompt), 0
        while True:
            nxt = int(logits[0, -1].argmax())
            n += 1
            yield nxt
            if nxt == EOS or pos >= self.max_seq or n == max_new:
                return
            logits = await self._step(torch.tensor([[nxt]]), pos, caches)
            pos += 1

    async def generate(self, prompt: list[int], max_new: int) -> list[int]:
        return [t async for t in self.tokens(prompt, max_new)]

    async def __call__(self, request: Request) -> StreamingResponse:
        body = await request.json()
        prompt = body.get("prompt_ids") or encode(str(body.get("prompt", "")))

        async def stream() -> AsyncIterator[str]:
            async for tok in self.tokens(prompt, int(body.get("max_tokens", 16))):
                yield json.dumps({"token": tok, "text": decode([tok])}) + "\n"

        return StreamingResponse(stream(), media_type="application/x-ndjson")


def build_moe_app(args: dict[str, Any]) -> serve.Application:
    cfg = load_moe(args).cfg
    by_type: dict[str, list[dict]] = {}
    for o in args["operators"]:
        by_type.setdefault(o["type"], []).append(o)
    for need in ("Embedding", "Attention", "Experts"):
        if need not in by_type:
            raise ValueError(f"args.operators: an MoE split needs an {need} operator")
    covered = sorted(e for o in by_type["Experts"] for e in range(o.get("experts", [0, cfg.n_experts - 1])[0],
                                                                  o.get("experts", [0, cfg.n_experts - 1])[1] + 1))
    if covered != list(range(cfg.n_experts)):
        raise ValueError(f"args.operators: the Experts operators must hold experts 0-{cfg.n_experts - 1} once each")
    replicas = args.get("replicas") or {}
    cpus = float(args.get("num_cpus", 0.25))

    def opts(name: str) -> dict[str, Any]:
        return {"name": name, "num_replicas": int(replicas.get(name, 1)), "ray_actor_options": {"num_cpus": cpus}}

    emb = EmbeddingDeployment.options(**opts(by_type["Embedding"][0]["name"])).bind(args)
    attn = AttentionDeployment.options(**opts(by_type["Attention"][0]["name"])).bind(args)
    experts = [ExpertsDeployment.options(**opts(o["name"])).bind(args, *o.get("experts", [0, cfg.n_experts - 1]))
               for o in by_type["Experts"]]
    return MoEIngress.options(ray_actor_options={"num_cpus": cpus}).bind(emb, attn, experts, cfg.n_layers, cfg.max_seq)
