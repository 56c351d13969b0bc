"""The diffusion pipeline as a Ray Serve application of typed operators: ``TextEncoder``, ``Denoiser``
(runs a request's steps; calls the ``ControlNet`` deployment each step when there is one, else holds
the ControlNet itself), ``VAEDecoder``, chained by an ingress.

Every operator call carries the time it was sent; the operator answers with its result and
``(operator, queue_ms, service_ms)``: queueing is from the send to the start of the call (Ray Serve's
router queue and the hand-off), service is the call itself. The ingress keeps them (``stats``), which is
what the simulator's per-operator queueing is compared against.

``args`` (the RayService ``serveConfigV2`` args): ``family: Diffusion``, ``operators`` [{name, type}],
``config`` (``toy`` or ``sd15``), ``seed``; for local runs ``replicas`` {name: n} and ``num_cpus``.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse

from gensched_workloads import diffusion as d

Timing = tuple[str, float, float]


def _cfg(args: dict[str, Any]) -> d.PipelineConfig:
    name = str(args.get("config", "toy"))
    if name not in d.CONFIGS:
        raise ValueError(f"args.config {name!r}: use one of {sorted(d.CONFIGS)}")
    return d.CONFIGS[name]


def _timing(name: str, sent: float, started: float) -> Timing:
    return (name, (started - sent) * 1000, (time.time() - started) * 1000)


def request_of(body: dict[str, Any]) -> d.ImageRequest:
    return d.ImageRequest(prompt=str(body.get("prompt", "")), steps=int(body.get("steps", 4)),
                          pixels=int(body.get("pixels", 16)), guidance=float(body.get("guidance", 0.0)),
                          seed=int(body.get("seed", 0)), control=bool(body.get("control", False)))


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class TextEncoderOp:
    def __init__(self, args: dict[str, Any], name: str) -> None:
        torch.set_num_threads(1)
        self.cfg, self.name = _cfg(args), name
        self.te = d.text_encoder(self.cfg, int(args.get("seed", 0)))

    async def __call__(self, req: d.ImageRequest, sent: float) -> tuple[torch.Tensor, Timing]:
        started = time.time()
        emb = d.embeddings(self.te, self.cfg, req)
        return emb, _timing(self.name, sent, started)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class ControlNetOp:
    def __init__(self, args: dict[str, Any], name: str) -> None:
        torch.set_num_threads(1)
        self.name = name
        self.cn = d.controlnet(_cfg(args), int(args.get("seed", 0)))

    async def __call__(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, img: torch.Tensor,
                       sent: float) -> tuple[tuple, Timing]:
        started = time.time()
        res = d.control_residuals(self.cn, x, t, emb, img)
        return res, _timing(self.name, sent, started)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class DenoiserOp:
    def __init__(self, args: dict[str, Any], name: str, controlnet: DeploymentHandle | None) -> None:
        torch.set_num_threads(1)
        self.cfg, self.name = _cfg(args), name
        seed = int(args.get("seed", 0))
        self.un = d.unet(self.cfg, seed)
        self.controlnet = controlnet
        self.cn = d.controlnet(self.cfg, seed) if controlnet is None else None  # the adapter held here

    async def __call__(self, req: d.ImageRequest, emb: torch.Tensor, sent: float
                       ) -> tuple[torch.Tensor, list[Timing]]:
        started = time.time()
        run = d.Denoising(self.cfg, req, emb)
        timings: list[Timing] = []
        remote_ms = 0.0
        for t in run.timesteps:
            res = None
            if req.control:
                x, img = run.control_inputs()
                if self.controlnet is not None:
                    t0 = time.time()
                    res, timing = await self.controlnet.remote(x, t, emb, img, t0)
                    timings.append(timing)
                    remote_ms += (time.time() - t0) * 1000
                else:
                    res = d.control_residuals(self.cn, x, t, emb, img)
            run.step(self.un, t, res)
        name, queue_ms, total_ms = _timing(self.name, sent, started)
        timings.append((name, queue_ms, total_ms - remote_ms))  # its own work, not the ControlNet's
        return run.latents, timings


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class VaeDecoderOp:
    def __init__(self, args: dict[str, Any], name: str) -> None:
        torch.set_num_threads(1)
        self.name = name
        self.va = d.vae(_cfg(args), int(args.get("seed", 0)))

    async def __call__(self, latents: torch.Tensor, sent: float) -> tuple[torch.Tensor, Timing]:
        started = time.time()
        return d.decode_latents(self.va, latents), _timing(self.name, sent, started)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class DiffusionIngress:
    def __init__(self, te: DeploymentHandle, denoiser: DeploymentHandle, vae: DeploymentHandle) -> None:
        self.te, self.denoiser, self.vae = te, denoiser, vae
        self.timings: list[tuple[float, str, float, float]] = []  # (request arrival, operator, queue, service)

    async def generate(self, body: dict[str, Any]) -> tuple[torch.Tensor, float]:
        req = request_of(body)
        arrived = time.time()
        emb, t1 = await self.te.remote(req, time.time())
        latents, t2 = await self.denoiser.remote(req, emb, time.time())
        image, t3 = await self.vae.remote(latents, time.time())
        self.timings += [(arrived, *t) for t in (t1, *t2, t3)]
        return image, (time.time() - arrived) * 1000

    def stats(self) -> list[tuple[float, str, float, float]]:
        out, self.timings = self.timings, []
        return out

    async def __call__(self, request: Request) -> JSONResponse:
        image, latency_ms = await self.generate(await request.json())
        return JSONResponse({"shape": list(image.shape), "image": [round(float(v), 6) for v in image.flatten()],
                             "latency_ms": round(latency_ms, 2)})


def build_diffusion_app(args: dict[str, Any]) -> serve.Application:
    ops = {o["type"]: o["name"] for o in args["operators"]}
    missing = [t for t in ("TextEncoder", "Denoiser", "VAEDecoder") if t not in ops]
    if missing:
        raise ValueError(f"args.operators: a diffusion pipeline needs {missing} operators")
    replicas = args.get("replicas") or {}
    cpus = float(args.get("num_cpus", 0.25))

    def opts(name: str) -> dict[str, Any]:
        return {"name": name, "num_replicas": int(replicas.get(name, 1)), "ray_actor_options": {"num_cpus": cpus},
                "max_ongoing_requests": int((args.get("max_ongoing") or {}).get(name, 1))}

    control = ControlNetOp.options(**opts(ops["ControlNet"])).bind(args, ops["ControlNet"]) \
        if "ControlNet" in ops else None
    te = TextEncoderOp.options(**opts(ops["TextEncoder"])).bind(args, ops["TextEncoder"])
    den = DenoiserOp.options(**opts(ops["Denoiser"])).bind(args, ops["Denoiser"], control)
    vae = VaeDecoderOp.options(**opts(ops["VAEDecoder"])).bind(args, ops["VAEDecoder"])
    return DiffusionIngress.options(ray_actor_options={"num_cpus": cpus}, max_ongoing_requests=1000).bind(te, den, vae)
