"""The split model as a Ray Serve application: one deployment per model operator, chained by an
ingress that streams generated tokens over HTTP (newline-delimited JSON). Typed operators of a
diffusion pipeline or a mixture-of-experts decoder are served by ``serve_diffusion`` / ``serve_moe``.

``build_app(args)`` is the ``import_path`` target of the RayService ``serveConfigV2`` the operator
renders; per-deployment ``num_replicas`` / ``ray_actor_options`` there (or ``.options`` locally)
scale each operator on its own. Operators are stateless (the ingress carries each request's KV
caches), so a request's steps may go to any replica.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import torch
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import StreamingResponse

from gensched_workloads.model import EOS, DecoderLM, ModelConfig, decode, encode
from gensched_workloads.operators import OperatorRunner, OperatorSpec, split


def load_model(args: dict[str, Any]) -> DecoderLM:
    """Real weights from ``uri`` (a directory written by ``DecoderLM.save``), else seeded weights."""
    if args.get("uri"):
        return DecoderLM.load(args["uri"])
    return DecoderLM.seeded(ModelConfig(**(args.get("config") or {})), seed=int(args.get("seed", 0)))


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class ModelOperator:
    def __init__(self, args: dict[str, Any], spec: OperatorSpec) -> None:
        torch.set_num_threads(1)
        self.runner = OperatorRunner(load_model(args), spec)
        self.spec = spec
        # Load shaping for demos and tests only: extra time per call, standing in for an operator
        # that is heavier on a real GPU (e.g. attention over long KV caches).
        self.extra_s = float((args.get("extra_ms") or {}).get(spec.name, 0)) / 1000

    async def __call__(self, x: torch.Tensor, start: int, past: list | None) -> tuple[torch.Tensor, list]:
        if self.extra_s:
            await asyncio.sleep(self.extra_s)
        return self.runner(x, start, past)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class Ingress:
    def __init__(self, operators: list[DeploymentHandle], max_seq: int) -> None:
        self.operators = operators
        self.max_seq = max_seq

    async def _step(self, x: torch.Tensor, pos: int, caches: list) -> torch.Tensor:
        for i, op in enumerate(self.operators):
            x, caches[i] = await op.remote(x, pos, caches[i])
        return x

    async def tokens(self, prompt: list[int], max_new: int) -> AsyncIterator[int]:
        caches: list = [None] * len(self.operators)
        logits = await self._step(torch.tensor([prompt]), 0, caches)
        pos, n = len(prompt), 0
        while n < max_new:
            nxt = int(logits[0, -1].argmax())
            n += 1
            yield nxt
            if n == max_new or nxt == EOS or pos >= self.max_seq:
                return
            logits = await self._step(torch.tensor([[nxt]]), pos, caches)
            pos += 1

    async def __call__(self, request: Request) -> StreamingResponse:
        body = await request.json()
        prompt = body.get("prompt_ids") or encode(str(body.get("prompt", "")))
        max_new = int(body.get("max_tokens", 16))
        started = time.perf_counter()

        async def stream() -> AsyncIterator[str]:
            async for tok in self.tokens(prompt, max_new):
                yield json.dumps({"token": tok, "text": decode([tok]),
                                  "t_ms": round((time.perf_counter() - started) * 1000, 2)}) + "\n"

        return StreamingResponse(stream(), media_type="application/x-ndjson")


def build_app(args: dict[str, Any]) -> serve.Application:
    """``args``: ``operators`` as [{"name", "layers": [first, last]}], plus ``uri`` or ``config``/``seed``.
    Optional ``replicas`` {name: n} and ``num_cpus`` (per replica) for local runs. Typed operators
    (``family`` Diffusion or MoE, as the operator renders them) build the pipeline's or the MoE's app."""
    family = args.get("family")
    if family == "Diffusion":
        from gensched_workloads.serve_diffusion import build_diffusion_app

        return build_diffusion_app(args)
    if family == "MoE":
        from gensched_workloads.serve_moe import build_moe_app

        return build_moe_app(args)
    if any(o.get("type", "Layers") != "Layers" for o in args["operators"]):
        from gensched_workloads.serve_dense import build_dense_app

        return build_dense_app(args)  # typed (Attention / FFN / Embedding) or prefill / decode
    model_cfg = load_model(args).cfg
    groups = [(o["name"], int(o["layers"][0]), int(o["layers"][1])) for o in args["operators"]]
    specs = split(model_cfg.n_layers, groups)
    replicas = args.get("replicas") or {}
    cpus = float(args.get("num_cpus", 0.25))
    handles = [ModelOperator.options(name=s.name, num_replicas=int(replicas.get(s.name, 1)),
                                     ray_actor_options={"num_cpus": cpus}).bind(args, s) for s in specs]
    return Ingress.options(ray_actor_options={"num_cpus": cpus}).bind(handles, model_cfg.max_seq)
