"""The split model on real Ray Serve (CPU): streamed tokens equal the unsplit model's, and each
model operator scales on its own."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from gensched_workloads.model import DecoderLM, encode, generate
from gensched_workloads.serve_app import build_app
from tests.harness.ray_serve import LocalServe

pytestmark = pytest.mark.integration
OPERATORS = [{"name": "early", "layers": [0, 1]}, {"name": "middle", "layers": [2, 2]},
             {"name": "late", "layers": [3, 3]}]


@pytest.fixture(scope="module")
def serve_cluster() -> Iterator[LocalServe]:
    # Ray's CPUs are logical: 4 lets the biggest app here (7 deployments at 0.25, 2 of them scaled) and
    # Ray's own actors start on a 2-core machine; the cores are shared either way.
    s = LocalServe(num_cpus=4)
    yield s
    s.close()


@pytest.fixture
def local_serve(serve_cluster: LocalServe) -> Iterator[LocalServe]:
    """Each test starts with no application: one left scaled up by a test would hold the logical CPUs
    the next one's replicas need, and its serve.run would wait for them forever."""
    yield serve_cluster
    for name in list(serve_cluster.serve.status().applications):
        serve_cluster.serve.delete(name)


def stream(url: str, prompt: str, max_tokens: int) -> list[dict]:
    r = requests.post(url + "/", json={"prompt": prompt, "max_tokens": max_tokens}, stream=True, timeout=60)
    r.raise_for_status()
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in r.iter_lines() if line]


def test_split_app_streams_the_same_tokens_and_scales_per_operator(local_serve: LocalServe) -> None:
    serve = local_serve.serve
    args = {"operators": OPERATORS, "seed": 0}
    serve.run(build_app(args), name="lm", route_prefix="/")
    reference = DecoderLM.seeded(seed=0)
    for prompt in ("hello world", "per-layer autoscaling"):
        events = stream(local_serve.url, prompt, 12)
        assert [e["token"] for e in events] == generate(reference, encode(prompt), 12)
        assert [e["t_ms"] for e in events] == sorted(e["t_ms"] for e in events)  # streamed in order
    assert local_serve.replicas("lm") == {"early": 1, "middle": 1, "late": 1, "Ingress": 1}

    serve.run(build_app({**args, "replicas": {"middle": 3}}), name="lm", route_prefix="/")
    assert local_serve.replicas("lm") == {"early": 1, "middle": 3, "late": 1, "Ingress": 1}
    prompts = ["a", "bb", "ccc", "dddd"]
    for p in prompts:  # requests now spread over the middle replicas; outputs unchanged
        assert [e["token"] for e in stream(local_serve.url, p, 8)] == generate(reference, encode(p), 8)


def test_local_mode_scales_the_busy_operator_from_real_prometheus_metrics(
        local_serve: LocalServe, prometheus_server) -> None:
    import threading
    import time

    from gensched.autoscale.policy import Limits, Settings
    from gensched.observe.serve_metrics import MetricsUnavailable, observe
    from gensched_workloads.local_autoscale import LocalAutoscaler
    from tests.conftest import wait_for
    from tests.harness.load import azure_shaped_arrivals

    args = {"operators": OPERATORS, "seed": 0, "extra_ms": {"late": 120}}  # "late" is the heavy operator
    local_serve.serve.run(build_app(args), name="lm", route_prefix="/")
    prom = prometheus_server(targets=[f"127.0.0.1:{local_serve.metrics_port}"])
    stop = threading.Event()
    arrivals = azure_shaped_arrivals(rate=4.0, seconds=60, seed=1)
    errors: list[Exception] = []

    def client() -> None:
        t0 = time.monotonic()
        for at, out_tokens in arrivals:
            if stop.is_set():
                return
            delay = at - (time.monotonic() - t0)
            if delay > 0:
                time.sleep(delay)
            threading.Thread(target=one, args=(max(2, min(out_tokens, 6)),), daemon=True).start()

    def one(n: int) -> None:
        try:
            stream(local_serve.url, "load", n)
        except Exception as exc:
            errors.append(exc)

    threading.Thread(target=client, daemon=True).start()
    def loaded() -> dict | None:
        try:
            o = observe(prom.url, "lm", ["early", "middle", "late"], window="15s")
        except MetricsUnavailable:
            return None  # Ray's agent exports a few seconds after the first requests
        return o if (o["late"].ongoing or 0) > 0 and (o["late"].rate_rps or 0) > 0 else None

    seen = wait_for(loaded, timeout=60, every=1, what="Prometheus to see load on the operators")
    assert seen["late"].rate_rps and seen["late"].rate_rps > 0
    scaler = LocalAutoscaler(prom.url, "lm", args, Limits(1, 4, target_ongoing=1.0),
                             Settings(cooldown_s=2, stabilization_s=600, scale_up_step=2))
    wait_for(lambda: scaler.step() is not None and scaler.replicas()["late"] > 1, timeout=60, every=2,
             what="the heavy operator to scale up")
    stop.set()
    replicas = local_serve.replicas("lm")
    # Each operator follows its own load: the heavy one ends with more replicas than the light ones (on
    # a busy 2-core machine the light ones may grow too, just less).
    assert replicas["late"] > 1 and replicas["late"] > replicas["early"]
    assert max(c.new for _, changes in scaler.history for c in changes if c.name == "late") > max(
        [c.new for _, changes in scaler.history for c in changes if c.name == "early"] or [1])
    assert not errors
    reference = DecoderLM.seeded(seed=0)
    assert [e["token"] for e in stream(local_serve.url, "still right", 8)] == generate(
        reference, encode("still right"), 8)


# -- typed operators: the diffusion pipeline and the mixture of experts ------------------------------

DIFFUSION_OPS = [{"name": "text-encoder", "type": "TextEncoder"}, {"name": "denoiser", "type": "Denoiser"},
                 {"name": "vae-decoder", "type": "VAEDecoder"}]


def test_diffusion_operators_on_ray_serve_give_the_unsplit_pipelines_images(local_serve: LocalServe) -> None:
    import torch

    from gensched_workloads.diffusion import TOY, ImageRequest, Pipeline

    torch.set_num_threads(1)  # as the replicas run: the same arithmetic order
    reference = Pipeline(TOY, seed=0)
    serve = local_serve.serve
    args = {"family": "Diffusion", "config": "toy", "seed": 0,
            "operators": [*DIFFUSION_OPS, {"name": "controlnet", "type": "ControlNet"}]}
    serve.run(build_app(args), name="sd", route_prefix="/sd")
    cases = [{"prompt": "a red cube", "steps": 3, "pixels": 16},
             {"prompt": "a blue cat", "steps": 2, "pixels": 32, "guidance": 4.0, "seed": 5},
             {"prompt": "edges", "steps": 2, "pixels": 16, "guidance": 2.0, "control": True, "seed": 2}]
    for body in cases:
        r = requests.post(local_serve.url + "/sd", json=body, timeout=300)
        r.raise_for_status()
        got = torch.tensor(r.json()["image"]).reshape(r.json()["shape"])
        want = reference.generate(ImageRequest(**body))
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5), (body, (got - want).abs().max())
    timings = serve.get_app_handle("sd").stats.remote().result()
    names = {t[1] for t in timings}
    assert names == {"text-encoder", "denoiser", "controlnet", "vae-decoder"}  # the ControlNet called each step
    assert sum(1 for t in timings if t[1] == "controlnet") == 2 and all(t[2] >= -5 and t[3] > 0 for t in timings)
    # Scaled on its own: two denoiser replicas, the ControlNet inside the denoiser (a shared adapter).
    serve.run(build_app({**args, "operators": DIFFUSION_OPS, "replicas": {"denoiser": 2}}), name="sd",
              route_prefix="/sd")
    assert local_serve.replicas("sd")["denoiser"] == 2
    body = cases[2]
    r = requests.post(local_serve.url + "/sd", json=body, timeout=300).json()
    assert torch.allclose(torch.tensor(r["image"]).reshape(r["shape"]), reference.generate(ImageRequest(**body)),
                          atol=1e-5)
    serve.delete("sd")


def test_moe_operators_on_ray_serve_give_the_unsplit_models_tokens(local_serve: LocalServe) -> None:
    import torch

    from gensched_workloads.moe import MoEDecoder, generate

    torch.set_num_threads(1)
    reference = MoEDecoder.seeded(seed=0)
    ops = [{"name": "embedding", "type": "Embedding"}, {"name": "attention", "type": "Attention"},
           {"name": "hot-experts", "type": "Experts", "experts": [0, 1]},
           {"name": "cold-experts", "type": "Experts", "experts": [2, 7]}]
    args = {"family": "MoE", "operators": ops, "seed": 0}
    serve = local_serve.serve
    serve.run(build_app(args), name="moe", route_prefix="/moe")
    for prompt in ("mixture", "of experts"):
        got = [e["token"] for e in stream(local_serve.url + "/moe", prompt, 8)]
        assert got == generate(reference, encode(prompt), 8)
    serve.run(build_app({**args, "replicas": {"hot-experts": 2}}), name="moe", route_prefix="/moe")
    assert local_serve.replicas("moe")["hot-experts"] == 2 and local_serve.replicas("moe")["cold-experts"] == 1
    got = [e["token"] for e in stream(local_serve.url + "/moe", "skewed", 6)]
    assert got == generate(reference, encode("skewed"), 6)
    serve.delete("moe")


def test_dense_typed_and_prefill_decode_operators_give_the_unsplit_models_tokens(local_serve: LocalServe) -> None:
    import torch

    torch.set_num_threads(1)
    reference = DecoderLM.seeded(seed=0)
    serve = local_serve.serve
    typed = [{"name": "embedding", "type": "Embedding"}, {"name": "attention", "type": "Attention"},
             {"name": "ffn", "type": "FFN"}]
    phases = [{"name": "prefill", "type": "Model", "phase": "Prefill"},
              {"name": "decode", "type": "Model", "phase": "Decode"}]
    for name, ops in (("typed", typed), ("pd", phases)):
        serve.run(build_app({"operators": ops, "seed": 0, "family": "DenseLM"}), name=name, route_prefix=f"/{name}")
        for prompt in ("typed operators", "by phase"):
            got = [e["token"] for e in stream(local_serve.url + f"/{name}", prompt, 10)]
            assert got == generate(reference, encode(prompt), 10), name
        serve.delete(name)
