"""The kind e2e plan (tests/e2e/plan.py) checked where there is no Docker.

The chart is rendered with exactly the plan's values; every rendered manifest and the plan's own
manifests go through real ``kubectl apply --dry-run=client`` and ``--dry-run=server`` against the API
emulator and through kubernetes-validate; the plan's image values are checked against the chart's values
schema and the rendered Deployment; the job through the operator's own validation; the fake-GPU script
on nodes shaped as kind creates them from kind-config.yaml; and the plan's Lease and lifecycle steps
(the same commands, regexes and comparisons) run against the real operator on the emulator.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from gensched.api import GenerativeJobSpec
from gensched.controller.leader import LeaderElector
from gensched.controller.nodes import gpu_node_from
from gensched.controller.objects import batch_job
from tests.conftest import Cluster, OperatorProcess
from tests.e2e import plan
from tests.harness.emulator import Kind, merge_patch
from tests.harness.server import EmulatorServer
from tests.harness.tools import ROOT, Kubectl, tool

pytestmark = pytest.mark.integration
CHART = ROOT / plan.CHART
# Built-in kinds the chart renders that the emulator does not register by default (discovery only: kubectl
# needs them to map the manifests; kubernetes-validate checks their schemas).
EXTRA_KINDS = [("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
               ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
               ("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
               ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
               ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True)]


@pytest.fixture(scope="module")
def helm() -> str:
    binary = tool("helm")
    if binary is None:
        pytest.fail("helm not installed: run `make tools` (scripts/install-tools.sh)")
    return binary


@pytest.fixture(scope="module")
def rendered(helm: str) -> list[dict]:
    """What `helm install` of the plan creates: the chart with the plan's release, namespace and --set values."""
    args = [helm, "template", plan.RELEASE, str(CHART), "--namespace", plan.NAMESPACE, "--include-crds"]
    for s in plan.HELM_SETS:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _step(name: str) -> plan.Step:
    return next(s for s in plan.STEPS if s.name == name)


def _flag(argv: tuple[str, ...], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_plan_values_fit_the_chart_schema_and_the_deployment_runs_the_loaded_image(rendered: list[dict]) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for dotted, value in plan.HELM_VALUES.items():  # every value the plan sets is one the chart reads
        *parents, leaf = dotted.split(".")
        node = values
        for p in parents:
            node = node[p]
        assert leaf in node, f"{dotted} is not in charts/gensched/values.yaml"
        node[leaf] = value
    jsonschema.validate(values, json.loads((CHART / "values.schema.json").read_text()))
    deploys = [d for d in rendered if d["kind"] == "Deployment"]
    assert len(deploys) == 1
    dep = deploys[0]
    assert (dep["metadata"]["name"], dep["metadata"]["namespace"]) == (plan.DEPLOYMENT, plan.NAMESPACE)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == plan.IMAGE and container["imagePullPolicy"] == "Never"
    assert container["args"][:2] == ["run", "--standalone"]  # the image's ENTRYPOINT is `gensched`
    env = {e["name"]: e for e in container["env"]}
    assert env["GENSCHED_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"  # Lease here
    assert inspect.signature(LeaderElector).parameters["name"].default == plan.LEASE
    assert plan.OPERATOR_SELECTOR.split("=") in [list(kv) for kv in dep["spec"]["selector"]["matchLabels"].items()]
    # The image the plan builds is the one it loads into kind and the one the chart runs.
    build, load = _step("build the operator image").argv, _step("load the operator image").argv
    assert build[:2] == ("docker", "build") and build[-1] == "." and _flag(build, "-t") == plan.IMAGE
    assert (ROOT / _flag(build, "-f")).is_file() and _flag(build, "-f") == "operator/Dockerfile"
    assert load[:3] == ("kind", "load", "docker-image") and load[3] == plan.IMAGE
    assert _flag(load, "--name") == plan.CLUSTER == "gensched"
    install = _step("install the chart").argv
    assert install[:4] == ("helm", "install", plan.RELEASE, plan.CHART) and _flag(install, "-n") == plan.NAMESPACE
    assert tuple(install[i + 1] for i, a in enumerate(install) if a == "--set") == plan.HELM_SETS
    assert f"deployment/{plan.DEPLOYMENT}" in _step("wait for the operator rollout").argv
    # The workload runs an image the plan loads into kind, so kind's nodes pull nothing.
    assert plan.GENERATIVE_JOB["spec"]["model"]["image"] == plan.WORKLOAD_IMAGE
    loaded = {s.argv[3] for s in plan.STEPS if s.argv[:3] == ("kind", "load", "docker-image")}
    assert plan.WORKLOAD_IMAGE in loaded


def _register_extra_kinds(api: EmulatorServer) -> None:
    emu = api.emulator
    assert emu is not None
    for group, version, plural, kind, namespaced in EXTRA_KINDS:
        if (group, plural) not in emu.kinds:
            emu.register(Kind(group, version, plural, kind, namespaced, status_subresource=False))


def _names(docs: list[dict]) -> set[str]:
    """What `kubectl apply -o name` prints for each document: kind.group/name."""
    out = set()
    for d in docs:
        group = d["apiVersion"].rpartition("/")[0]
        out.add(f"{d['kind'].lower()}{'.' + group if group else ''}/{d['metadata']['name']}")
    return out


def test_every_manifest_passes_kubectl_dry_run_and_kubernetes_validate(
        rendered: list[dict], api: EmulatorServer, crds: Kubectl, tmp_path: Path) -> None:
    _register_extra_kinds(api)
    docs = [*rendered, plan.NAMESPACE_MANIFEST, plan.GENERATIVE_JOB]
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == sorted({"CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                            "RoleBinding", "Deployment", "PodDisruptionBudget", "Service", "SchedulingPolicy",
                            "Namespace", "GenerativeJob"})
    manifests = tmp_path / "e2e.yaml"
    manifests.write_text(yaml.safe_dump_all(docs))
    for mode in ("client", "server"):  # server: the emulator validates CRs against the CRD schemas, stores nothing
        out = crds("apply", f"--dry-run={mode}", "-f", str(manifests), "-o", "name").stdout.split()
        assert set(out) == _names(docs), mode
    assert api.emulator is not None and api.emulator.get("gensched.io", "generativejobs", plan.JOB_NAMESPACE,
                                                         plan.JOB) is None
    # A typo in the job is caught by the same dry run (the check can fail).
    bad = json.loads(json.dumps(plan.GENERATIVE_JOB))
    bad["spec"]["resources"]["gpus"] = 9
    refused = crds("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
    assert refused.returncode != 0 and "spec.resources.gpus" in refused.stderr
    # Built-in kinds against the real Kubernetes schemas, with the Job the operator makes of the plan's job,
    # as created (suspended) and as released (the release patch's node affinity and annotations merged in).
    spec = GenerativeJobSpec.model_validate(plan.GENERATIVE_JOB["spec"])
    owner = dict(plan.GENERATIVE_JOB, metadata=dict(plan.GENERATIVE_JOB["metadata"], uid="0000-e2e"))
    job = batch_job(plan.JOB, plan.JOB_NAMESPACE, spec, owner)
    released = merge_patch(job, {"spec": {"suspend": False, "template": {
        "metadata": {"annotations": {"gensched.io/gpus": "0"}},
        "spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                                         "values": [next(iter(plan.kind_workers()))]}]}]}}}}}}})
    builtin = [d for d in docs if d["kind"] not in ("SchedulingPolicy", "GenerativeJob")]
    path = tmp_path / "builtin.yaml"
    path.write_text(yaml.safe_dump_all([*builtin, job, dict(released, metadata=dict(job["metadata"], name="rel"))]))
    validator = Path(sys.executable).parent / "kubernetes-validate"  # installed with the test extra
    result = subprocess.run([str(validator), "--strict", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_plans_job_passes_the_operators_validation_and_its_command_prints_what_the_plan_expects(
        tmp_path: Path) -> None:
    spec = GenerativeJobSpec.model_validate(plan.GENERATIVE_JOB["spec"])
    assert spec.mode == "Batch" and spec.batch is not None and spec.resources.whole_gpus == 1
    smallest = min(mib for _, mib, _ in plan.FAKE_GPUS.values()) / 1024
    assert spec.gpu_memory_gib() <= smallest  # fits either fake GPU model
    # The container as the operator builds it, run here with its env (sleep stubbed): the log line the
    # e2e step waits for comes from the variables the operator sets.
    container = batch_job(plan.JOB, plan.JOB_NAMESPACE, spec,
                          dict(plan.GENERATIVE_JOB, metadata={"name": plan.JOB, "uid": "u"})
                          )["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == plan.WORKLOAD_IMAGE  # loaded into kind; IfNotPresent (not :latest) uses it
    assert container.get("imagePullPolicy") in (None, "IfNotPresent", "Never") and ":latest" not in plan.IMAGE
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "sleep").write_text("#!/bin/sh\nexit 0\n")
    (stub / "sleep").chmod(0o755)
    env = {e["name"]: e["value"] for e in container["env"]}
    out = subprocess.run([*container["command"], *container["args"]], capture_output=True, text=True, check=True,
                         env={"PATH": f"{stub}:{os.environ['PATH']}", **env}).stdout
    assert re.search(_step("the workload ran").until or "", out), out


def _kind_nodes(api: EmulatorServer) -> None:
    """Nodes as kind creates them from kind-config.yaml (kubelet capacity, no GPUs yet)."""
    emu = api.emulator
    assert emu is not None
    nodes = {f"{plan.CLUSTER}-control-plane": {"node-role.kubernetes.io/control-plane": ""}, **plan.kind_workers()}
    for name, labels in nodes.items():
        cap = {"cpu": "16", "memory": "131072Mi", "pods": "110", "ephemeral-storage": "100Gi"}
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                                      **labels}},
                "spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}
                if name.endswith("control-plane") else {},
                "status": {"capacity": cap, "allocatable": dict(cap),
                           "conditions": [{"type": "Ready", "status": "True"}]}}
        api.call(emu.create(emu.kinds[("", "nodes")], None, body))


def test_fake_gpu_script_advertises_what_the_operator_reads(api: EmulatorServer, kubectl: Kubectl,
                                                            tmp_path: Path) -> None:
    env = plan.environment(tmp_path / "kubeconfig", tmp_path / "kubectl-cache")
    advertise = _step("advertise fake GPUs")
    with pytest.raises(plan.StepFailed, match=r"no node has the gensched\.io/gpu-sim label"):
        plan.run(advertise, env)  # before the nodes exist: a clear error, not a silent no-op
    _kind_nodes(api)
    out = plan.run(advertise, env)
    assert api.emulator is not None
    for name, labels in plan.kind_workers().items():
        product, mib, count = plan.FAKE_GPUS[labels["gensched.io/gpu-sim"]]
        assert f"node {name}: {count} x {product}" in out
        node = api.emulator.get("", "nodes", None, name)
        assert node is not None
        assert {k: node["metadata"]["labels"][k] for k in ("nvidia.com/gpu.product", "nvidia.com/gpu.memory",
                                                           "nvidia.com/gpu.count")} == {
            "nvidia.com/gpu.product": product, "nvidia.com/gpu.memory": str(mib), "nvidia.com/gpu.count": str(count)}
        for field in ("capacity", "allocatable"):  # the merge patch adds the GPUs and keeps the kubelet's values
            assert node["status"][field]["nvidia.com/gpu"] == str(count)
            assert node["status"][field]["cpu"] == "16"
        gpu = gpu_node_from(node)
        assert gpu is not None
        assert (gpu.gpu_count, gpu.gpu_model, gpu.gpu_memory_gib) == (count, product, round(mib / 1024, 2))
    control = api.emulator.get("", "nodes", None, f"{plan.CLUSTER}-control-plane")
    assert control is not None and gpu_node_from(control) is None


def test_the_plans_lease_and_lifecycle_steps_pass_against_the_operator(
        api: EmulatorServer, cluster: Cluster, tmp_path: Path) -> None:
    emu = api.emulator
    assert emu is not None
    emu.kinds.pop(("ray.io", "rayservices"))  # kind has no KubeRay: the operator must run without its API
    del emu.resources["ray.io/v1/rayservices"]
    _kind_nodes(api)
    env = plan.environment(tmp_path / "kubeconfig", tmp_path / "kubectl-cache")
    plan.run(_step("advertise fake GPUs"), env)
    op = OperatorProcess(tmp_path / "kubeconfig", tmp_path / "operator.log", env={"GENSCHED_NAMESPACE": plan.NAMESPACE})
    op.start()
    try:
        done = plan.run_all(plan.LEADER, env)
        lease = cluster.get("coordination.k8s.io", "leases", plan.NAMESPACE, plan.LEASE)
        assert lease is not None and lease["spec"]["holderIdentity"] == done["a replica holds the Lease"]
        steps = [s for s in plan.LIFECYCLE if not s.real_cluster_only]
        cut = next(i for i, s in enumerate(steps) if s.name == "delete the GenerativeJob")
        plan.run_all(steps[:cut], env, done)
        job = cluster.get("batch", "jobs", plan.JOB_NAMESPACE, plan.JOB)
        assert job is not None
        container = job["spec"]["template"]["spec"]["containers"][0]
        model = plan.GENERATIVE_JOB["spec"]["model"]
        assert (container["image"], container["command"], container["args"]) == (
            model["image"], model["command"], model["args"])
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        node = done["placement node"]
        assert node in plan.kind_workers() and set(cluster.standin.bound.values()) == {node}
        plan.run_all(steps[cut:], env, done)
        assert cluster.gj(plan.JOB, plan.JOB_NAMESPACE) is None
        assert cluster.get("batch", "jobs", plan.JOB_NAMESPACE, plan.JOB) is None
    finally:
        op.stop()
    text = op.logs()
    assert "Traceback" not in text, text[text.find("Traceback") - 1500:][:5000]
    assert f"lease {plan.NAMESPACE}/{plan.LEASE}" in text
    assert "Unresolved resources cannot be served" in text and "ray.io" in text  # kopf noticed, and went on
