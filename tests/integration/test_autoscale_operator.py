"""Per-operator autoscaling through the real operator: a real Prometheus scrapes an exporter that
publishes Ray Serve's metric names; the operator reads it with prometheus-api-client and patches the
RayService replicas per model operator; with Prometheus gone it keeps the replicas."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from tests.conftest import Cluster, OperatorProcess, wait_for
from tests.harness.ports import free_port
from tests.harness.prometheus import PrometheusServer
from tests.harness.tools import ROOT, Kubectl

pytestmark = pytest.mark.integration
EXAMPLE = ROOT / "workloads" / "examples" / "serve-llama-operators.yaml"
OPS = ["embed-early", "middle", "late-head"]


class RayMetrics:
    """Ray Serve's metric names and labels, with values the test sets."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["application", "deployment"]
        self.running = Gauge("ray_serve_replica_processing_queries", "running", labels, registry=self.registry)
        self.queued = Gauge("ray_serve_deployment_queued_queries", "queued", labels, registry=self.registry)
        self.requests = Counter("ray_serve_deployment_request_counter", "requests", labels, registry=self.registry)
        self.port = free_port()
        self.server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def load(self, deployment: str, running: float, queued: float = 0.0) -> None:
        self.running.labels("chat-llama", deployment).set(running)
        self.queued.labels("chat-llama", deployment).set(queued)
        self.requests.labels("chat-llama", deployment).inc(10)


@pytest.fixture
def ray_metrics() -> Iterator[RayMetrics]:
    m = RayMetrics()
    yield m
    m.server.shutdown()


@pytest.fixture
def fast_operator(cluster: Cluster, tmp_path: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(tmp_path / "kubeconfig", tmp_path / "operator.log", env={"GENSCHED_AUTOSCALE_SECONDS": "1"})
    op.start()
    yield op
    op.stop()


def serve_policy(prometheus_url: str, target: float) -> dict:
    """The default policy these tests scale under: no cool-down or stabilization, so every pass may act."""
    return {"apiVersion": "gensched.io/v1alpha1", "kind": "SchedulingPolicy", "metadata": {"name": "serve"},
            "spec": {"default": True, "autoscaling": {
                "prometheusUrl": prometheus_url, "intervalSeconds": 5, "cooldownSeconds": 0,
                "scaleDownStabilizationSeconds": 0, "targetOngoingRequests": target}}}


def replicas(cluster: Cluster) -> dict[str, int]:
    svc = cluster.get("ray.io", "rayservices", "default", "chat-llama") or {"spec": {}}
    app = (yaml.safe_load(svc["spec"].get("serveConfigV2") or "{}") or {}).get("applications") or [{}]
    return {d["name"]: d["num_replicas"] for d in app[0].get("deployments") or [] if d["name"] != "Ingress"}


def test_operators_scale_on_their_own_metrics_and_hold_without_them(
        cluster: Cluster, fast_operator: OperatorProcess, crds: Kubectl, ray_metrics: RayMetrics,
        prometheus_server: Callable[..., PrometheusServer]) -> None:
    prom = prometheus_server(targets=[f"127.0.0.1:{ray_metrics.port}"])
    for name in OPS:
        ray_metrics.load(name, 0.5)
    ray_metrics.load("middle", 6.0, queued=1.0)  # the busy operator: 7 in flight
    policy = serve_policy(prom.url, target=2)
    crds("apply", "-f", "-", stdin=yaml.safe_dump(policy))
    cluster.add_node("gpu-a", gpus=2)
    crds("apply", "-f", str(EXAMPLE))
    cluster.wait_phase("chat-llama", "Running", timeout=30)
    assert replicas(cluster) == {"embed-early": 1, "middle": 1, "late-head": 1}
    blocked = wait_for(lambda: [e["message"] for e in cluster.events_for("chat-llama")
                                if e["reason"] == "ScaleUpBlocked"], timeout=60,
                       what="scale-up blocked: 3 worker GPUs needed, 2 exist")
    assert "blocked" in blocked[0] and replicas(cluster)["middle"] == 1
    cluster.add_node("gpu-b", gpus=2)  # room arrives: the same decision now goes through
    wait_for(lambda: replicas(cluster)["middle"] == 4, timeout=60, what="middle scaled to ceil(7 / 2)")
    assert replicas(cluster) == {"embed-early": 1, "middle": 4, "late-head": 1}
    svc = cluster.get("ray.io", "rayservices", "default", "chat-llama")
    workers = json.loads(svc["metadata"]["annotations"]["gensched.io/worker-placements"])
    assert len(workers) == 3  # 0.25 + 4 x 0.5 + 0.25 = 2.5 GPUs -> 3 worker GPUs, more than gpu-a's 2
    assert {w["node"] for w in workers} == {"gpu-a", "gpu-b"}
    pinned = {}  # each node's worker group runs exactly the workers reserved on that node
    for g in svc["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        terms = g["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        pinned[terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0]] = g["replicas"]
    assert pinned == {n: sum(w["node"] == n for w in workers) for n in ("gpu-a", "gpu-b")}
    st = wait_for(lambda: (cluster.gj("chat-llama") or {}).get("status", {}).get("operatorReplicas", {}).get("middle")
                  == 4 and cluster.gj("chat-llama")["status"], what="status.operatorReplicas")
    assert "middle 1 -> 4" in st["autoscaling"]["lastDecision"]
    wait_for(lambda: {c["type"]: c["status"] for c in cluster.gj("chat-llama")["status"]["conditions"]}.get(
        "MetricsAvailable") == "True", what="MetricsAvailable=True")  # every pass re-asserts it
    msgs = wait_for(lambda: [e["message"] for e in cluster.events_for("chat-llama") if e["reason"] == "ScaledOperator"],
                    what="ScaledOperator event")
    assert "7.0 in flight / 2 per replica" in msgs[0]
    assert ('gensched_model_operator_replicas{generativejob="chat-llama",namespace="default",operator="middle"} 4.0'
            in fast_operator.metrics())

    ray_metrics.load("middle", 1.0)  # load falls: scale back down (no stabilization in this policy)
    wait_for(lambda: replicas(cluster)["middle"] == 1, timeout=60, what="middle back to 1")

    ray_metrics.load("middle", 20.0)
    prom.stop()  # metrics gone: nothing may change, the job says why
    cond = wait_for(lambda: next((c for c in (cluster.gj("chat-llama") or {}).get("status", {}).get("conditions", [])
                                  if c["type"] == "MetricsAvailable" and c["status"] == "False"), None),
                    timeout=60, what="MetricsAvailable=False")
    assert "keeping replicas" in cond["message"]
    assert replicas(cluster) == {"embed-early": 1, "middle": 1, "late-head": 1}
    wait_for(lambda: "MetricsUnavailable" in [e["reason"] for e in cluster.events_for("chat-llama")],
             what="MetricsUnavailable warning")


def test_unservable_model_gets_a_condition_and_no_rayservice(cluster: Cluster, operator: OperatorProcess,
                                                             crds: Kubectl) -> None:
    cluster.add_node("gpu-a", gpus=8)  # A100 80 GB nodes
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["model"]["parametersBillions"] = 1000
    doc["spec"]["serve"]["slo"] = {"ttftMs": 5000, "tbtMs": 2000}
    crds("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    gj = wait_for(lambda: next((g for g in [cluster.gj("chat-llama")] if g and any(
        c["type"] == "Feasible" and c["status"] == "False" for c in g.get("status", {}).get("conditions", []))), None),
        what="Feasible=False")
    cond = next(c for c in gj["status"]["conditions"] if c["type"] == "Feasible")
    assert cond["reason"] == "ModelTooLarge" and "split it into at least" in cond["message"]
    assert gj["status"]["phase"] == "Pending"
    assert cluster.get("ray.io", "rayservices", "default", "chat-llama") is None  # nothing half-deployed
    wait_for(lambda: "ModelTooLarge" in [e["reason"] for e in cluster.events_for("chat-llama")],
             what="ModelTooLarge warning event")
    doc["spec"]["model"]["precision"] = "int4"  # the suggested fix: the job is admitted
    doc["spec"]["model"]["parametersBillions"] = 70
    crds("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    wait_for(lambda: cluster.get("ray.io", "rayservices", "default", "chat-llama") is not None,
             what="RayService after the fix")


def _toy_profile() -> str:
    """A measured-style (CPU) profile where ``middle`` costs 6 ms per sequence and the others 0.1 ms."""
    def op(name: str, base: float, per_seq: float) -> dict:
        return {"name": name, "weights_gib": 0.1, "kv_gib_per_token": 0.0, "step_base_ms": base,
                "step_per_seq_ms": per_seq, "step_per_kctx_ms": 0.0, "prefill_base_ms": 1.0,
                "prefill_per_token_ms": 0.01, "hop_ms": 0.0}
    return json.dumps({"model": "toy", "gpu": "cpu", "gpu_memory_gib": 80.0, "gpu_watts": 0.0, "idle_watts": 0.0,
                       "modelled": False, "source": "test",
                       "operators": [op("embed-early", 1.9, 0.1), op("middle", 2.0, 6.0), op("late-head", 1.9, 0.1)]})


def test_a_measured_profile_sizes_each_operator_and_is_required_before_deploying(
        cluster: Cluster, fast_operator: OperatorProcess, crds: Kubectl, ray_metrics: RayMetrics,
        prometheus_server: Callable[..., PrometheusServer]) -> None:
    prom = prometheus_server(targets=[f"127.0.0.1:{ray_metrics.port}"])
    for name in OPS:
        ray_metrics.load(name, 7.0)  # the same load everywhere: only the profiles differ
    policy = serve_policy(prom.url, target=1)
    crds("apply", "-f", "-", stdin=yaml.safe_dump(policy))
    cluster.add_node("gpu-a", gpus=8)
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["serve"]["profile"] = {"configMap": "llama-profile", "contextTokens": 0}
    crds("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    cond = wait_for(lambda: next((c for c in (cluster.gj("chat-llama") or {}).get("status", {}).get("conditions", [])
                                  if c["type"] == "Feasible" and c["status"] == "False"), None), what="Feasible=False")
    assert cond["reason"] == "ProfileInvalid" and "create configmap llama-profile" in cond["message"]
    assert cluster.get("ray.io", "rayservices", "default", "chat-llama") is None  # nothing half-deployed

    profile_cm = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "llama-profile", "namespace": "default"},
                  "data": {"profile.json": _toy_profile()}}
    crds("apply", "-f", "-", stdin=yaml.safe_dump(profile_cm))
    cluster.wait_phase("chat-llama", "Running", timeout=60)
    # budgets (80% of tbtMs 50, by batch-1 step): middle 26.7 ms -> 4 in flight, the others 6.7 ms -> 47
    wait_for(lambda: replicas(cluster).get("middle") == 2, timeout=60, what="middle scaled to ceil(7 / 4)")
    assert replicas(cluster) == {"embed-early": 1, "middle": 2, "late-head": 1}  # the policy alone would give 7 each
    st = wait_for(lambda: (cluster.gj("chat-llama") or {}).get("status", {}).get("autoscaling", {}).get("sizing")
                  and cluster.gj("chat-llama")["status"], what="status.autoscaling.sizing")
    assert st["autoscaling"]["sizing"]["middle"]["targetOngoing"] == 4
    assert st["autoscaling"]["sizing"]["embed-early"] == {"targetOngoing": 47, "latencyBudgetMs": 6.67,
                                                          "source": "profile"}
    applied = next(c for c in st["conditions"] if c["type"] == "ProfileApplied")
    assert applied["status"] == "True" and "middle 4 in flight" in applied["message"]
    msgs = [e["message"] for e in cluster.events_for("chat-llama") if e["reason"] == "ScaledOperator"]
    assert any("7.0 in flight / 4 per replica" in m for m in msgs)

    crds("delete", "configmap", "llama-profile")  # the profile goes away: fall back to the policy, say so
    wait_for(lambda: "ProfileInvalid" in [e["reason"] for e in cluster.events_for("chat-llama")],
             what="ProfileInvalid warning")
    wait_for(lambda: replicas(cluster) == {"embed-early": 7, "middle": 7, "late-head": 7}, timeout=60,
             what="policy target (1 per replica) after the profile is gone")

    # Model granularity: the operators scale as one unit, sized by the most constrained one (middle: 4)
    crds("apply", "-f", "-", stdin=yaml.safe_dump(profile_cm))
    policy["spec"]["autoscaling"]["granularity"] = "Model"
    crds("apply", "-f", "-", stdin=yaml.safe_dump(policy))
    wait_for(lambda: replicas(cluster) == {"embed-early": 2, "middle": 2, "late-head": 2}, timeout=60,
             what="every operator at ceil(7 / 4) under Model granularity")
