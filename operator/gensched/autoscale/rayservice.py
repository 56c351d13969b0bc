"""Render a KubeRay ``RayService`` (ray.io/v1) for a Serve-mode GenerativeJob.

Each model operator becomes its own Ray Serve deployment in ``serveConfigV2``, with its own GPU
share and replica bounds, so it can be scaled on its own: a typed operator (attention, FFN, experts,
embedding, a prefill or decode phase, a diffusion stage) or a pipeline stage of consecutive layers.
The ingress deployment chains them with deployment handles (see workloads/). Pure: returns plain
dicts, talks to no cluster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import yaml

from gensched.api.generativejob import DEFAULT_WEIGHT_SHARE, GenerativeJobSpec, OperatorType

RAY_VERSION = "2.40.0"
SERVE_IMPORT_PATH = "gensched_workloads.serve_app:build_app"

INGRESS = "Ingress"  # the HTTP entry deployment; every other deployment is a model operator


@dataclass(frozen=True)
class OperatorPlan:
    name: str
    first_layer: int  # typed operators span every layer: 0 .. model.layers - 1
    last_layer: int
    gpus: float  # GPU share of one replica (as deployed: Ray Serve num_gpus)
    min_replicas: int
    max_replicas: int
    type: str = str(OperatorType.LAYERS)
    phase: str | None = None
    experts: tuple[int, int] | None = None  # Experts operators: first and last expert held
    weight_share: float = 1.0  # share of the model's weights one replica holds

    def user_config(self) -> dict:
        if self.type == OperatorType.LAYERS:
            return {"first_layer": self.first_layer, "last_layer": self.last_layer}
        out: dict = {"type": self.type}
        if self.phase:
            out["phase"] = self.phase
        if self.experts is not None:
            out["experts"] = list(self.experts)
        return out

    def app_arg(self) -> dict:
        out: dict = {"name": self.name, "type": self.type}
        if self.type == OperatorType.LAYERS:
            out["layers"] = [self.first_layer, self.last_layer]
        if self.phase:
            out["phase"] = self.phase
        if self.experts is not None:
            out["experts"] = list(self.experts)
        return out


def _share(gpus: float) -> float:
    """Ray Serve takes a fraction of one GPU or whole GPUs: round a share above 1 up to whole GPUs."""
    return float(math.ceil(gpus - 1e-9)) if gpus > 1 else max(round(gpus, 3), 0.001)


def operator_plan(spec: GenerativeJobSpec) -> list[OperatorPlan]:
    """Model operators with their GPU share; default is one operator holding the whole model.

    An operator without ``gpus`` gets ``resources.gpus`` (what one whole-model replica needs) times the
    share of the weights it holds: its layers' share for a pipeline stage, its type's usual share (or its
    own ``parametersBillions``) for a typed operator."""
    assert spec.serve is not None
    serve = spec.serve
    layers = spec.model.layers
    last_all = (layers - 1) if layers else 0
    if not serve.operators:
        return [OperatorPlan("model", 0, last_all, _share(spec.resources.gpus), serve.min_replicas,
                             serve.max_replicas, str(OperatorType.MODEL))]
    family = serve.model_family()
    plans = []
    if serve.is_pipeline():
        total = layers or sum(len(op.layer_indices()) for op in serve.operators)
        for op in serve.operators:
            idx = op.layer_indices()
            w = len(idx) / total if op.parameters_billions is None else op.parameters_billions / \
                spec.model.parameters_billions
            share = op.gpus if op.gpus is not None else spec.resources.gpus * len(idx) / total
            plans.append(OperatorPlan(op.name, idx[0], idx[-1], _share(share), serve.min_replicas, serve.max_replicas,
                                      str(OperatorType.LAYERS), op.phase, None, w))
        return plans
    for op in serve.operators:
        experts = None
        if op.kind == OperatorType.EXPERTS:
            idx = op.expert_indices(serve.experts)
            experts = (idx[0], idx[-1])
        if op.parameters_billions is not None:
            w = op.parameters_billions / spec.model.parameters_billions
        else:
            w = DEFAULT_WEIGHT_SHARE[family][op.kind]
            if experts is not None:
                w *= (experts[1] - experts[0] + 1) / serve.experts
        share = op.gpus if op.gpus is not None else spec.resources.gpus * w
        plans.append(OperatorPlan(op.name, 0, last_all, _share(share), serve.min_replicas, serve.max_replicas,
                                  op.kind, op.phase, experts, w))
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
            "user_config": p.user_config(),
        }
        for p in plans
    ]
    deployments.append({"name": INGRESS, "num_replicas": 1, "ray_actor_options": {"num_cpus": 1}})
    args: dict = {
        "model": spec.model.name,
        "uri": spec.model.uri,
        "precision": spec.model.precision,
        "operators": [p.app_arg() for p in plans],
    }
    if spec.serve.operators and not spec.serve.is_pipeline():
        args["family"] = str(spec.serve.model_family())
        if args["family"] == "MoE":
            args["experts"] = spec.serve.experts
    serve_config = {
        "applications": [
            {
                "name": name,
                "route_prefix": "/",
                "import_path": SERVE_IMPORT_PATH,
                "args": args,
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
