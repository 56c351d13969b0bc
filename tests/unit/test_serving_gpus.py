"""Worker GPUs of a Serve job: how many, and how they are written into the RayService."""

from __future__ import annotations

import json

import yaml

from gensched.api import GenerativeJobSpec
from gensched.autoscale import render_rayservice
from gensched.controller import serving_gpus
from gensched.packing import Allocation
from tests.harness.tools import ROOT


def test_worker_gpus_round_the_summed_shares_up() -> None:
    deps = [{"name": "a", "num_replicas": 3, "ray_actor_options": {"num_gpus": 0.25}},
            {"name": "b", "num_replicas": 2, "ray_actor_options": {"num_gpus": 0.5}},
            {"name": "Ingress", "num_replicas": 1, "ray_actor_options": {"num_cpus": 1}}]
    assert serving_gpus.worker_gpus(deps) == 2  # 0.75 + 1.0 = 1.75
    deps[0]["num_replicas"] = 4
    assert serving_gpus.worker_gpus(deps) == 2  # exactly 2.0: no extra GPU
    assert serving_gpus.worker_gpus([]) == 0


def test_pin_writes_replicas_affinity_and_a_readable_record() -> None:
    doc = yaml.safe_load((ROOT / "workloads/examples/serve-llama-operators.yaml").read_text())
    manifest = render_rayservice("chat", "ns", GenerativeJobSpec.model_validate(doc["spec"]), {})
    allocs = [Allocation(key=f"ns/chat#worker-{i}", node=n, gpu_indices=(g,), gpu_milli=1000, gpu_memory_gib=8.0,
                         cpu_milli=1000, memory_mib=4096) for i, (n, g) in enumerate([("b", 0), ("a", 3), ("b", 1)])]
    serving_gpus.pin(manifest["spec"], manifest["metadata"], allocs)
    assert manifest["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is False

    def by_node(spec: dict) -> dict[str, tuple[str, int]]:
        out = {}
        for g in spec["rayClusterConfig"]["workerGroupSpecs"]:
            assert g["replicas"] == g["minReplicas"] == g["maxReplicas"]
            terms = g["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            [node] = terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
            out[node] = (g["groupName"], g["replicas"])
        return out

    # one group per node, as many workers as GPUs reserved there: the scheduler cannot move them
    groups = by_node(manifest["spec"])
    assert {n: r for n, (_, r) in groups.items()} == {"a": 1, "b": 2}
    assert all(name.startswith("gpu-workers-") and len(name) == len("gpu-workers-") + 8 for name, _ in groups.values())
    assert serving_gpus.held(manifest) == allocs  # what a restarted operator reads back
    assert len(json.loads(manifest["metadata"]["annotations"][serving_gpus.ANN_WORKERS])) == 3
    # re-pinning the live spec (a scale change) keeps each node's group name and drops emptied nodes
    live = json.loads(json.dumps(manifest["spec"]))
    serving_gpus.pin(live, {}, allocs[:2])
    again = by_node(live)
    assert again == {"a": (groups["a"][0], 1), "b": (groups["b"][0], 1)}
    serving_gpus.pin(live, {}, [])
    assert [(g["groupName"], g["replicas"]) for g in live["rayClusterConfig"]["workerGroupSpecs"]] == [
        ("gpu-workers", 0)]
