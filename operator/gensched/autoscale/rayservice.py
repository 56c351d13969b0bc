"""Render a KubeRay ``RayService`` (ray.io/v1) for a Serve-mode GenerativeJob.

Each model operator (a group of layers) becomes its own Ray Serve deployment in
``serveConfigV2``, with its own GPU share and replica bounds, so it can be
scaled on its own. The ingress deployment chains them with deployment handles
(see workloads/). Pure: returns plain dicts, talks to no cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from gensched.api.generativejob import GenerativeJobSpec

RAY_VERSION = "2.40.0"
SERVE_IMPORT_PATH = "gensched_workloads.serve_app:build_app"

INGRESS = "Ingress"  # the HTTP entry deployment; every other deployment is a model operator


@dataclass(frozen=True)
class OperatorPlan:
    name: str
    first_layer: int
    last_layer: int
    gpus: float
    min_replicas: int
    max_replicas: int


def operator_plan(spec: GenerativeJobSpec) -> list[OperatorPlan]:
    """Model operators with their GPU share; default is one operator holding the whole model."""
    assert spec.serve is not None
    serve = spec.serve
    layers = spec.model.layers
    if not serve.operators:
        last = (layers - 1) if layers else 0
        return [OperatorPlan("model", 0, last, spec.resources.gpus, serve.min_replicas, serve.max_replicas)]
    total = sum(len(op.layer_indices()) for op in serve.operators)
    plans = []
    for op in serve.operators:
        idx = op.layer_indices()
        share = op.gpus if op.gpus is not None else round(spec.resources.gpus * len(idx) / total, 3)
        plans.append(OperatorPlan(op.name, idx[0], idx[-1], max(share, 0.001), serve.min_replicas, serve.max_replicas))
    return plans


def render_rayservice(name: str, namespace: str, spec: GenerativeJobSpec, labels: dict[str, str]) -> dict:
    """The RayService manifest (without ownerReferences, which the controller adds)."""
    assert spec.serve is not None
    plans = operator_plan(spec)
    deployments = [
        {
            "name": p.name,
            "num_replicas": max(p.min_replicas, 1),
            "max_ongoing_requests": 8,
            "ray_actor_options": {"num_cpus": 1, "num_gpus": p.gpus},
            "user_config": {"first_layer": p.first_layer, "last_layer": p.last_layer},
        }
        for p in plans
    ]
    deployments.append({"name": INGRESS, "num_replicas": 1, "ray_actor_options": {"num_cpus": 1}})
    serve_config = {
        "applications": [
            {
                "name": name,
                "route_prefix": "/",
                "import_path": SERVE_IMPORT_PATH,
                "args": {
                    "model": spec.model.name,
                    "uri": spec.model.uri,
                    "precision": spec.model.precision,
                    "operators": [{"name": p.name, "layers": [p.first_layer, p.last_layer]} for p in plans],
                },
                "deployments": deployments,
            }
        ]
    }
    gpu_workers = sum(max(p.min_replicas, 1) * p.gpus for p in plans)
    max_gpu_workers = sum(p.max_replicas * p.gpus for p in plans)
    container = {
        "image": spec.model.image,
        "resources": {
            "requests": {"cpu": spec.resources.cpu, "memory": spec.resources.memory},
            "limits": {"cpu": spec.resources.cpu, "memory": spec.resources.memory, "nvidia.com/gpu": 1},
        },
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "enableInTreeAutoscaling": True,
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-gpus": "0"},
                    "template": {"spec": {"containers": [{
                        "name": "ray-head",
                        "image": spec.model.image,
                        "ports": [{"containerPort": 6379, "name": "gcs"},
                                  {"containerPort": 8265, "name": "dashboard"},
                                  {"containerPort": 10001, "name": "client"},
                                  {"containerPort": spec.serve.port, "name": "serve"}],
                        "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                                      "limits": {"cpu": "2", "memory": "4Gi"}},
                    }]}},
                },
                "workerGroupSpecs": [{
                    "groupName": "gpu-workers",
                    "replicas": max(1, int(-(-gpu_workers // 1))),
                    "minReplicas": max(1, int(-(-gpu_workers // 1))),
                    "maxReplicas": max(1, int(-(-max_gpu_workers // 1))),
                    "rayStartParams": {},
                    "template": {"spec": {"containers": [dict(container, name="ray-worker")]}},
                }],
            },
        },
    }
