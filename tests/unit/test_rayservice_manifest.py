"""The rendered RayService against what KubeRay documents (ray.io/v1 API reference: RayServiceSpec,
RayClusterSpec, HeadGroupSpec, WorkerGroupSpec), its Serve config against Ray Serve's own schema, and
its pod templates against the Kubernetes Pod schema."""

from __future__ import annotations

import copy

import jsonschema
import kubernetes_validate
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from gensched.api import GenerativeJobSpec
from gensched.autoscale import render_rayservice
from gensched.controller import serving_gpus
from gensched.packing import Allocation
from tests.harness.tools import ROOT

STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
TEMPLATE = {"type": "object", "required": ["spec"], "properties": {"metadata": {"type": "object"},
                                                                   "spec": {"type": "object"}}}
INT32 = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
# Only fields the KubeRay API reference lists for these types; unknown ones are refused.
RAYSERVICE = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayService"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {"type": "object", "additionalProperties": False, "required": ["rayClusterConfig"],
                 "properties": {
                     "serveConfigV2": {"type": "string"},
                     "rayClusterConfig": {
                         "type": "object", "additionalProperties": False, "required": ["headGroupSpec"],
                         "properties": {
                             "rayVersion": {"type": "string"},
                             "enableInTreeAutoscaling": {"type": "boolean"},
                             "headGroupSpec": {"type": "object", "additionalProperties": False,
                                               "required": ["template"],
                                               "properties": {"rayStartParams": STR_MAP, "template": TEMPLATE,
                                                              "serviceType": {"type": "string"}}},
                             "workerGroupSpecs": {"type": "array", "items": {
                                 "type": "object", "additionalProperties": False,
                                 "required": ["groupName", "template"],
                                 "properties": {"groupName": {"type": "string"}, "replicas": INT32,
                                                "minReplicas": INT32, "maxReplicas": INT32,
                                                "rayStartParams": STR_MAP, "template": TEMPLATE}}},
                         }},
                 }},
    },
}


@pytest.fixture
def rendered() -> dict:
    doc = yaml.safe_load((ROOT / "workloads/examples/serve-llama-operators.yaml").read_text())
    manifest = render_rayservice("chat-llama", "default", GenerativeJobSpec.model_validate(doc["spec"]), {"a": "b"})
    # as the operator writes it: worker groups pinned per node by the packing engine's reservations
    allocs = [Allocation(f"default/chat-llama#worker-{i}", node, (i,), 1000, 8.0, 1000, 4096)
              for i, node in enumerate(["gpu-a", "gpu-b", "gpu-b"])]
    serving_gpus.pin(manifest["spec"], manifest["metadata"], allocs)
    assert len(manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]) == 2
    return manifest


def test_rayservice_uses_only_documented_fields(rendered: dict) -> None:
    jsonschema.validate(rendered, RAYSERVICE)
    groups = rendered["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert all(g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] for g in groups)
    broken = copy.deepcopy(rendered)
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["rayStartParams"] = {"num-gpus": 1}
    with pytest.raises(jsonschema.ValidationError):  # rayStartParams values are strings in KubeRay
        jsonschema.validate(broken, RAYSERVICE)


def test_serve_config_passes_ray_serves_own_schema(rendered: dict) -> None:
    config = ServeDeploySchema.model_validate(yaml.safe_load(rendered["spec"]["serveConfigV2"]))
    app = config.applications[0]
    assert app.import_path == "gensched_workloads.serve_app:build_app"
    names = [d.name for d in app.deployments]
    assert names == ["embed-early", "middle", "late-head", "Ingress"]
    assert all(d.num_replicas >= 1 for d in app.deployments)


def test_pod_templates_are_valid_pods(rendered: dict) -> None:
    cluster = rendered["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for i, tmpl in enumerate(templates):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"t{i}"}, "spec": tmpl["spec"]}
        kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
