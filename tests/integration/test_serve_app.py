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
