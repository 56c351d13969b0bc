"""Pure parts of the adapters: reading GPU nodes, the RayService manifest, the operator's dependencies."""

from __future__ import annotations

from importlib.metadata import requires

import pytest
import yaml

from gensched.api import GenerativeJobSpec
from gensched.autoscale import render_rayservice
from gensched.controller.nodes import gpu_node_from
from gensched.controller.objects import decode_allocation, encode_allocation, release_patch
from gensched.packing import Allocation


def node(labels: dict[str, str], capacity: dict[str, str], unschedulable: bool = False) -> dict:
    return {"metadata": {"name": "n1", "labels": labels}, "spec": {"unschedulable": unschedulable},
            "status": {"capacity": capacity, "allocatable": capacity}}


def test_gpu_nodes_follow_device_plugin_and_gfd_labels() -> None:
    gfd = {"nvidia.com/gpu.product": "NVIDIA-L4", "nvidia.com/gpu.memory": "23034", "nvidia.com/gpu.count": "4"}
    # time-slicing advertises 4 replicas per GPU: the physical count comes from GFD's label
    n = gpu_node_from(node(gfd, {"nvidia.com/gpu": "16", "cpu": "48", "memory": "192Gi"}))
    assert n is not None and (n.gpu_count, n.gpu_model, n.cpu_milli) == (4, "NVIDIA-L4", 48_000)
    assert n.gpu_memory_gib == pytest.approx(22.49, abs=0.01) and n.memory_mib == 192 * 1024
    assert gpu_node_from(node({}, {"cpu": "8", "memory": "32Gi"})) is None
    cordoned = gpu_node_from(node(gfd, {"nvidia.com/gpu": "4"}, unschedulable=True))
    assert cordoned is not None and not cordoned.schedulable  # kept: what runs there still counts
    shared = gpu_node_from(node({**gfd, "nvidia.com/gpu.product": "NVIDIA-L4-SHARED"}, {"nvidia.com/gpu": "4"}))
    assert shared is not None and shared.gpu_model == "NVIDIA-L4"  # time-slicing suffix maps to the base model
    odd = gpu_node_from(node(gfd, {"nvidia.com/gpu": "4", "cpu": "1e2", "memory": ".5Ti"}))
    assert odd is not None and (odd.cpu_milli, odd.memory_mib) == (100_000, 512 * 1024)


def test_mig_single_strategy_nodes_become_mig_nodes_and_mixed_ones_keep_plain_gpus() -> None:
    single = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb", "nvidia.com/gpu.memory": "9728",
              "nvidia.com/gpu.count": "14", "nvidia.com/mig.strategy": "single"}
    n = gpu_node_from(node(single, {"nvidia.com/gpu": "14", "cpu": "96", "memory": "1Ti"}))
    assert n is not None
    assert (n.gpu_count, n.gpu_model, n.mig_profile, n.gpu_memory_gib) == (2, "NVIDIA-A100-SXM4-80GB", "1g.10gb", 10.0)
    mixed = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.count": "2",
             "nvidia.com/mig.strategy": "mixed"}
    m = gpu_node_from(node(mixed, {"nvidia.com/gpu": "1", "nvidia.com/mig-1g.10gb": "7"}))
    assert m is not None and (m.gpu_count, m.mig_profile) == (1, "")  # only the unpartitioned GPU


def test_placement_record_round_trips_and_pins_the_node() -> None:
    alloc = Allocation("ns/j", "gpu-a", (2, 3), 1000, 40.0, 4000, 16384)
    assert decode_allocation(encode_allocation(alloc)) == alloc
    patch = release_patch(alloc)
    assert patch["spec"]["suspend"] is False
    term = patch["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert term == {"key": "kubernetes.io/hostname", "operator": "In", "values": ["gpu-a"]}
    assert patch["spec"]["template"]["metadata"]["annotations"]["gensched.io/gpus"] == "2,3"


SERVE = {"mode": "Serve", "model": {"name": "llama", "parametersBillions": 7, "layers": 32, "image": "img:1"},
         "resources": {"gpus": 1}, "serve": {"slo": {"ttftMs": 500, "tbtMs": 50}, "minReplicas": 1,
                                             "maxReplicas": 3,
                                             "operators": [{"name": "a", "layers": "0-7"},
                                                           {"name": "b", "layers": "8-31"}]}}


def test_rayservice_has_the_fields_kuberay_documents() -> None:
    m = render_rayservice("chat", "ml", GenerativeJobSpec.model_validate(SERVE), {"x": "y"})
    assert (m["apiVersion"], m["kind"], m["metadata"]["namespace"]) == ("ray.io/v1", "RayService", "ml")
    spec = m["spec"]
    assert isinstance(spec["serveConfigV2"], str)  # KubeRay takes the Serve config as a YAML string
    cluster = spec["rayClusterConfig"]
    assert cluster["rayVersion"] and cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == "img:1"
    worker = cluster["workerGroupSpecs"][0]
    assert worker["groupName"] and worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"]
    assert worker["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    app = yaml.safe_load(spec["serveConfigV2"])["applications"][0]
    assert app["import_path"] and app["route_prefix"] == "/"
    ops = {d["name"]: d for d in app["deployments"] if d["name"] != "Ingress"}
    assert list(ops) == ["a", "b"]
    assert ops["a"]["ray_actor_options"]["num_gpus"] == 0.25 and ops["b"]["ray_actor_options"]["num_gpus"] == 0.75
    assert ops["b"]["user_config"] == {"first_layer": 8, "last_layer": 31}


def test_operator_install_stays_free_of_torch_and_ray() -> None:
    base = [r for r in requires("gensched") or [] if "extra ==" not in r]
    assert base and not [r for r in base if r.startswith(("torch", "ray"))]
    extras = [r for r in requires("gensched") or [] if 'extra == "workloads"' in r]
    assert any(r.startswith("torch==2.13.0") for r in extras)


def test_operator_dockerfile_installs_no_workloads_extra() -> None:
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "operator" / "Dockerfile").read_text()
    installs = [line for line in text.splitlines() if "pip " in line and not line.lstrip().startswith("#")]
    assert installs and not any("workloads" in line or "torch" in line or "ray" in line for line in installs)
    assert "find_spec" in text and "'torch', 'ray'" in text  # the build fails if the model stack got in
    assert "USER 65532" in text  # matches the chart's runAsUser
