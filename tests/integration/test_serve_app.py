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
def local_serve() -> Iterator[LocalServe]:
    s = LocalServe(num_cpus=2)
    yield s
    s.close()


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
