"""Accounting through the real operator (issue 11): live status.accounting (modelled, and measured from DCGM
series in a real Prometheus), outputs and per-output ratios, budgets that suspend a job and queue a namespace's
new work, the serving circuit breaker holding a scale-up, the SchedulingPolicy status, and a restart that
keeps what was recorded.

The operator's clock runs faster in some tests (``GENSCHED_CLOCK_RATE``) so GPU time adds up quickly; every
assertion is on an invariant of the record (GPU-seconds = GPUs x the time the ledger covers, a measured
interval = the DCGM counter's difference), never on how fast the machine is.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tests.conftest import Cluster, OperatorProcess, wait_for
from tests.harness.ports import free_port
from tests.harness.prometheus import PrometheusServer
from tests.harness.tools import Kubectl

pytestmark = pytest.mark.integration
A100 = "NVIDIA-A100-SXM4-80GB"


def batch(name: str, gpus: float = 1, ns: str = "default", **spec: object) -> str:
    doc = {"apiVersion": "gensched.io/v1alpha1", "kind": "GenerativeJob", "metadata": {"name": name, "namespace": ns},
           "spec": {"mode": "Batch",
                    "model": {"name": "llama-2-7b", "parametersBillions": 7, "precision": "int4", "image": "w:1"},
                    "resources": {"gpus": gpus, "cpu": "1", "memory": "4Gi"},
                    "batch": {"input": "s3://in", **(spec.pop("batch", {}) or {})}, **spec}}
    return yaml.safe_dump(doc)


def policy(accounting: dict, name: str = "acct", **spec: object) -> str:
    return yaml.safe_dump({"apiVersion": "gensched.io/v1alpha1", "kind": "SchedulingPolicy", "metadata": {"name": name},
                           "spec": {"default": True, "accounting": {"intervalSeconds": 5, **accounting}, **spec}})


def status(cluster: Cluster, name: str, ns: str = "default") -> dict:
    return (cluster.gj(name, ns) or {}).get("status") or {}


def acc(cluster: Cluster, name: str, ns: str = "default") -> dict:
    return status(cluster, name, ns).get("accounting") or {}


def cond(cluster: Cluster, name: str, type_: str, ns: str = "default") -> dict:
    return next((c for c in status(cluster, name, ns).get("conditions") or [] if c["type"] == type_), {})


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def held_seconds(a: dict) -> float:
    """What the ledger covers, in seconds: from its first sample to its cursor."""
    led = a["ledger"]
    return ts(led["cursor"]["t"]) - ts(led["startedAt"])


@pytest.fixture
def make_operator(cluster: Cluster, tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def make(**env: str) -> OperatorProcess:
        op = OperatorProcess(tmp_path / "kubeconfig", tmp_path / "operator.log",
                             env={"GENSCHED_POLICY_STATUS_SECONDS": "1", "GENSCHED_NAMESPACE": "default", **env})
        op.start()
        started.append(op)
        return op

    yield make
    for op in started:
        op.stop()
    log = tmp_path / "operator.log"
    text = log.read_text() if log.exists() else ""
    if "Traceback" in text:
        at = text.index("Traceback")
        pytest.fail(f"the operator logged a traceback:\n{text[max(0, at - 1500):at + 4000]}", pytrace=False)


def test_live_modelled_accounting_names_missing_prices_and_survives_a_restart(
        cluster: Cluster, make_operator: Callable[..., OperatorProcess], crds: Kubectl, tmp_path: Path) -> None:
    csv = tmp_path / "ci.csv"
    t0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)
    csv.write_text("Time,Carbon Intensity\n" + "".join(f"{t0 + timedelta(minutes=30 * i):%Y-%m-%d %H:%M:%S},200\n"
                                                       for i in range(200)))
    operator = make_operator(GENSCHED_CARBON_CSV_DIR=str(tmp_path), GENSCHED_CLOCK_RATE="4")
    cluster.add_node("gpu-a", gpus=2)
    carbon = {"timing": {"carbon": {"provider": "CSV", "csvPath": str(csv)}}}
    crds("apply", "-f", "-", stdin=policy({"pricing": [{"gpuModel": "H100", "pricePerGpuHour": 4.0}]}, **carbon))
    cluster.standin.hold.add("synth")
    crds("apply", "-f", "-", stdin=batch("synth", 1))
    cluster.wait_phase("synth", "Running")
    a = wait_for(lambda: (x := acc(cluster, "synth")).get("gpuHours", 0) > 0 and x, what="live accounting")
    assert a["energySource"] == "Modelled" and a["final"] is False
    assert any("modelled from TDP" in n for n in a["notes"])
    assert any(f"GPU model {A100}: add it to accounting.pricing" in n for n in a["notes"])  # no price for A100
    assert a["cost"] == 0 and a["currency"] == "USD"
    assert any("no outputs reported yet" in n for n in a["notes"])  # no Prometheus: outputs never appear
    assert "outputs" not in a and "costPerOutput" not in a and "outputsPerKWh" not in a
    assert a["gCO2"] == pytest.approx(a["energyKWh"] * 200, rel=1e-3)  # the CSV's 200 gCO2/kWh
    c = cond(cluster, "synth", "Accounted")
    assert c["status"] == "True" and c["reason"] == "NoPrices"
    # GPU-seconds are exactly 1 GPU x the time the record covers (sample-and-hold from the release on)
    assert a["ledger"]["total"]["gpuSeconds"] == pytest.approx(held_seconds(a), abs=0.01)
    assert a["ledger"]["total"]["modelledJoules"] == pytest.approx(held_seconds(a) * 400 * 0.7, rel=1e-6)

    # the price arrives: cost follows GPU-hours from then on
    crds("apply", "-f", "-", stdin=policy({"pricing": [{"gpuModel": "A100", "pricePerGpuHour": 2.0}]}, **carbon))
    priced = wait_for(lambda: (x := acc(cluster, "synth")).get("cost", 0) > 0 and x, what="a cost")
    assert cond(cluster, "synth", "Accounted")["reason"] == "Modelled"
    unpriced_h = priced["ledger"]["total"]["unpricedGpuSeconds"] / 3600
    assert priced["cost"] == pytest.approx(2.0 * (priced["gpuHours"] - unpriced_h), rel=1e-3)
    assert "gensched_job_gpu_seconds_total" in operator.metrics()

    # the policy status says the policy is valid and its carbon signal answers
    ps = wait_for(lambda: (cluster.get("gensched.io", "schedulingpolicies", None, "acct") or {}).get("status", {})
                  .get("carbonSignal", {}).get("healthy") and cluster.get("gensched.io", "schedulingpolicies", None,
                                                                          "acct")["status"], what="policy status")
    assert ps["valid"] is True and {c["type"]: c["status"] for c in ps["conditions"]} == {
        "Valid": "True", "CarbonSignalHealthy": "True"}
    assert "Valid" in crds("get", "gsp").stdout.splitlines()[0].title()

    # restart: the new process continues the recorded ledger; the downtime is charged (the GPU was held)
    before = acc(cluster, "synth")
    operator.stop()
    time.sleep(1.0)
    operator = make_operator(GENSCHED_CARBON_CSV_DIR=str(tmp_path), GENSCHED_CLOCK_RATE="4")
    after = wait_for(lambda: (x := acc(cluster, "synth")).get("updatedAt") != before["updatedAt"] and x,
                     what="accounting after the restart")
    for k, v in before["ledger"]["total"].items():
        assert after["ledger"]["total"][k] >= v, k  # nothing recorded is lost or lowered
    assert after["ledger"]["startedAt"] == before["ledger"]["startedAt"]
    assert after["ledger"]["total"]["gpuSeconds"] == pytest.approx(held_seconds(after), abs=0.01)
    metric = next(line for line in operator.metrics().splitlines()
                  if line.startswith('gensched_job_gpu_seconds_total{generativejob="synth"'))
    assert float(metric.split()[-1]) >= before["ledger"]["total"]["gpuSeconds"]  # restored from status
    cluster.standin.hold.discard("synth")
    cluster.wait_phase("synth", "Succeeded")
    final = acc(cluster, "synth")
    assert final["final"] is True and final["ledger"]["final"] is True
    assert final["ledger"]["cursor"]["gpus"] == 0
    assert final["ledger"]["total"]["gpuSeconds"] >= after["ledger"]["total"]["gpuSeconds"]


class Exporter(Collector):
    """DCGM exporter metric names and labels for the pods the test registers (an energy counter in mJ that
    the test sets, and a power reading), and the batch entrypoint's outputs counter."""

    def __init__(self, watts: float = 120.0) -> None:
        self.watts, self.energy_j = watts, 1e6
        self.pods: dict[str, float] = {}  # pod -> outputs
        self.lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self.port = free_port()
        self.server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def collect(self):  # type: ignore[override]
        labels = ["namespace", "pod", "gpu"]
        energy = GaugeMetricFamily("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "mJ", labels=labels)
        power = GaugeMetricFamily("DCGM_FI_DEV_POWER_USAGE", "W", labels=labels)
        outputs = CounterMetricFamily("gensched_workload_outputs", "items", labels=["namespace", "pod"])
        with self.lock:
            for pod, n in self.pods.items():
                energy.add_metric(["default", pod, "0"], self.energy_j * 1000)
                power.add_metric(["default", pod, "0"], self.watts)
                outputs.add_metric(["default", pod], n)
        yield from (energy, power, outputs)


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    e = Exporter()
    yield e
    e.server.shutdown()


def test_measured_energy_from_dcgm_and_outputs_from_the_workload_counter(
        cluster: Cluster, make_operator: Callable[..., OperatorProcess], crds: Kubectl, exporter: Exporter,
        prometheus_server: Callable[..., PrometheusServer]) -> None:
    prom = prometheus_server(targets=[f"127.0.0.1:{exporter.port}"])
    make_operator(GENSCHED_CLOCK_RATE="2")  # samples every 5 s of its clock: 2.5 s here
    cluster.add_node("gpu-a", gpus=2)
    crds("apply", "-f", "-", stdin=policy({"pricing": [{"gpuModel": "A100", "pricePerGpuHour": 3.0}],
                                           "dcgm": {"enabled": True, "prometheusUrl": prom.url}},
                                          autoscaling={"prometheusUrl": prom.url}))
    cluster.standin.hold.add("synth")
    crds("apply", "-f", "-", stdin=batch("synth", 1))
    cluster.wait_phase("synth", "Running")
    # no DCGM series for its pod yet: modelled, and the condition says why
    c = wait_for(lambda: (x := cond(cluster, "synth", "Accounted")).get("reason") == "NoDcgmMetrics" and x,
                 what="NoDcgmMetrics")
    assert "energy modelled" in c["message"]
    pod = next(p["metadata"]["name"] for p in cluster.list("", "pods", "default")
               if p["metadata"]["labels"].get("job-name") == "synth")
    with exporter.lock:
        exporter.pods[pod] = 40.0
    first = wait_for(lambda: (x := acc(cluster, "synth")).get("ledger", {}).get("cursor", {}).get("energyJoules")
                     == 1e6 and x, what="a DCGM energy reading")
    with exporter.lock:
        exporter.energy_j = 1e6 + 900.0  # the GPU used 900 J since (within what its TDP allows)
    later = wait_for(lambda: (x := acc(cluster, "synth"))["ledger"]["cursor"].get("energyJoules") == 1e6 + 900
                     and x, timeout=30, what="the next DCGM reading")
    t1, t2 = first["ledger"], later["ledger"]
    measured = t2["total"]["measuredJoules"] - t1["total"].get("measuredJoules", 0.0)
    assert measured == pytest.approx(900.0, abs=1e-6)  # exactly the counter's difference, not 400 W x 0.7 x time
    assert t2["total"]["modelledJoules"] == t1["total"]["modelledJoules"]  # nothing modelled once measured
    assert later["energySource"] == "Mixed"  # the first interval, before the series existed, was modelled
    assert any("modelled where DCGM readings were missing" in n for n in later["notes"])
    assert cond(cluster, "synth", "Accounted")["reason"] == "Mixed"
    # outputs from the workload's counter, and what they cost
    a = wait_for(lambda: (x := acc(cluster, "synth")).get("outputs") == 40 and x, what="40 outputs")
    assert a["outputUnit"] == "items"
    assert a["costPerOutput"] == pytest.approx(a["cost"] / 40, rel=1e-4)
    assert a["gpuSecondsPerOutput"] == pytest.approx(a["ledger"]["total"]["gpuSeconds"] / 40, rel=1e-4)
    assert a["outputsPerKWh"] == pytest.approx(40 / a["energyKWh"], rel=1e-4)
    with exporter.lock:
        exporter.pods[pod] = 5.0  # the workload restarted without its checkpoint: counted from zero again
    a = wait_for(lambda: (x := acc(cluster, "synth")).get("outputs") == 45 and x, what="45 outputs")
    assert any("output counter went backwards 1x" in n for n in a["notes"])
    # Prometheus goes away: modelled again, said so, nothing recorded is lost
    prom.stop()
    c = wait_for(lambda: (x := cond(cluster, "synth", "Accounted")).get("reason") == "PrometheusUnavailable" and x,
                 timeout=30, what="PrometheusUnavailable")
    assert "did not answer" in c["message"] and "energy modelled" in c["message"]
    b = acc(cluster, "synth")
    assert b["outputs"] == 45 and b["ledger"]["total"]["measuredJoules"] >= t2["total"]["measuredJoules"]
    cluster.standin.hold.discard("synth")
    cluster.wait_phase("synth", "Succeeded")
    assert acc(cluster, "synth")["final"] is True


def test_a_job_budget_suspends_a_running_job_which_resumes_when_it_is_raised(
        cluster: Cluster, make_operator: Callable[..., OperatorProcess], crds: Kubectl) -> None:
    operator = make_operator(GENSCHED_CLOCK_RATE="4")
    cluster.add_node("gpu-a", gpus=2)
    crds("apply", "-f", "-", stdin=policy({"pricing": [{"gpuModel": "A100", "pricePerGpuHour": 2.0}]}))
    cluster.standin.hold.add("capped")
    # 0.006 GPU-hours = 21.6 GPU-seconds on the operator's clock; warn at half of it
    crds("apply", "-f", "-", stdin=batch("capped", 1, batch={"interruptible": True},
                                         budget={"maxGpuHours": 0.006, "warnAt": 0.5}))
    cluster.wait_phase("capped", "Running")
    st = wait_for(lambda: (s := status(cluster, "capped")).get("queue", {}).get("reason") == "BudgetExhausted" and s,
                  timeout=60, what="suspended by its budget")
    assert st["phase"] == "Pending" and "maxGpuHours" in st["message"] and "raise spec.budget" in st["message"]
    assert st.get("placement") is None
    assert cond(cluster, "capped", "BudgetExhausted")["status"] == "True"
    job = cluster.get("batch", "jobs", "default", "capped")
    assert job is not None and job["spec"]["suspend"] is True  # suspended (it checkpoints), not deleted
    assert "gensched.io/placement" not in (job["metadata"].get("annotations") or {})  # its GPUs are given back
    reasons = [e["reason"] for e in sorted(cluster.events_for("capped"),
                                           key=lambda e: int(e["metadata"]["resourceVersion"]))]
    assert reasons.index("BudgetWarning") < reasons.index("BudgetExhausted") < reasons.index("Suspended")
    assert reasons.count("BudgetExhausted") == 1 and reasons.count("BudgetWarning") == 1
    assert st["accounting"]["budget"]["state"] == "Exhausted" and st["accounting"]["budget"]["usedRatio"] >= 1
    assert st["accounting"]["ledger"]["total"]["gpuSeconds"] >= 21.6
    text = operator.metrics()
    assert 'gensched_preemptions_total{reason="Budget"} 1.0' in text
    assert 'gensched_budget_used_ratio{generativejob="capped",limit="maxGpuHours",namespace="default",period=""}' \
        in text
    used = st["accounting"]["ledger"]["total"]["gpuSeconds"]
    time.sleep(2)  # it stays suspended, and waiting costs nothing
    st = status(cluster, "capped")
    assert st["phase"] == "Pending" and st["queue"]["reason"] == "BudgetExhausted"
    assert st["accounting"]["ledger"]["total"]["gpuSeconds"] == used
    assert cluster.get("batch", "jobs", "default", "capped")["spec"]["suspend"] is True
    crds("patch", "gj", "capped", "--type", "merge", "-p", json.dumps({"spec": {"budget": {"maxGpuHours": 5}}}))
    cluster.wait_phase("capped", "Running", timeout=60)
    assert "BudgetRaised" in [e["reason"] for e in cluster.events_for("capped")]
    assert cond(cluster, "capped", "BudgetExhausted")["status"] == "False"
    cluster.standin.hold.discard("capped")
    done = cluster.wait_phase("capped", "Succeeded")
    assert done["status"]["accounting"]["final"] is True
    assert done["status"]["accounting"]["ledger"]["total"]["gpuSeconds"] > used


def test_a_namespace_over_budget_queues_new_work_and_keeps_deleted_jobs_counted(
        cluster: Cluster, make_operator: Callable[..., OperatorProcess], crds: Kubectl) -> None:
    make_operator(GENSCHED_CLOCK_RATE="4")
    cluster.add_node("gpu-a", gpus=4)
    budgets = [{"namespace": "team-a", "period": "24h", "maxGpuHours": 0.004}]
    crds("apply", "-f", "-", stdin=policy({"budgets": budgets}))
    cluster.standin.hold.update({"a1", "a2", "b1"})
    crds("apply", "-f", "-", stdin=batch("a1", 1, ns="team-a"))
    wait_for(lambda: status(cluster, "a1", "team-a").get("phase") == "Running", what="a1 running")

    def row() -> dict:
        p = cluster.get("gensched.io", "schedulingpolicies", None, "acct") or {}
        return next((r for r in (p.get("status") or {}).get("budgets") or [] if r["namespace"] == "team-a"), {})

    r = wait_for(lambda: (x := row()).get("state") == "Exhausted" and x, timeout=60, what="team-a budget used up")
    assert r["limit"] == "maxGpuHours" and r["gpuHours"] >= 0.004 and r["period"] == "24h" and r["jobs"] == 1
    assert "BudgetExhausted" in [e["reason"] for e in cluster.events_for("acct")]
    crds("apply", "-f", "-", stdin=batch("a2", 1, ns="team-a"))
    crds("apply", "-f", "-", stdin=batch("b1", 1, ns="team-b"))
    wait_for(lambda: status(cluster, "b1", "team-b").get("phase") == "Running", what="b1 running (no budget)")
    st = wait_for(lambda: (s := status(cluster, "a2", "team-a")).get("queue", {}).get("reason") == "BudgetExhausted"
                  and s, what="a2 waiting for budget")
    assert st["phase"] == "Pending" and "namespace team-a" in st["message"] and "maxGpuHours" in st["message"]
    assert status(cluster, "a1", "team-a")["phase"] == "Running"  # running work is not stopped by the namespace
    # deleting a1 refunds nothing: its use stays in the period (kept in the policy status)
    used = row()["gpuHours"]
    crds("delete", "gj", "a1", "-n", "team-a")
    p = wait_for(lambda: (x := cluster.get("gensched.io", "schedulingpolicies", None, "acct"))["status"].get("retired")
                 and x, what="a1's use retired into the policy status")
    assert p["status"]["retired"][0]["namespace"] == "team-a"
    assert row()["state"] == "Exhausted" and row()["gpuHours"] >= used
    assert status(cluster, "a2", "team-a")["phase"] == "Pending"
    budgets[0]["maxGpuHours"] = 10
    crds("apply", "-f", "-", stdin=policy({"budgets": budgets}))
    wait_for(lambda: status(cluster, "a2", "team-a").get("phase") == "Running", timeout=60, what="a2 after raising")
    assert row()["state"] == "Ok"


def test_an_invalid_policy_says_so_in_its_status(cluster: Cluster, operator: OperatorProcess, crds: Kubectl) -> None:
    doc = yaml.safe_load(policy({"pricing": [{"gpuModel": "A100", "pricePerGpuHour": 1.0},
                                             {"gpuModel": "A100", "pricePerGpuHour": 2.0}]}, name="twice"))
    doc["spec"]["default"] = False
    crds("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    st = wait_for(lambda: (cluster.get("gensched.io", "schedulingpolicies", None, "twice") or {}).get("status"),
                  timeout=30, what="policy status")
    assert st["valid"] is False and "priced twice" in st["message"]
    assert {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}["Valid"] == ("False", "InvalidSpec")


def test_the_circuit_breaker_holds_a_scale_up_until_an_admin_resets_it(
        cluster: Cluster, make_operator: Callable[..., OperatorProcess], crds: Kubectl,
        prometheus_server: Callable[..., PrometheusServer]) -> None:
    from tests.integration.test_autoscale_operator import EXAMPLE, RayMetrics, replicas

    ray = RayMetrics()
    try:
        prom = prometheus_server(targets=[f"127.0.0.1:{ray.port}"])
        for name in ("embed-early", "middle", "late-head"):
            ray.load(name, 0.5)
        # the operator's clock runs 20x: the breaker's 5-minute window is 15 s here
        op = make_operator(GENSCHED_CLOCK_RATE="20")
        crds("apply", "-f", "-", stdin=policy(
            {"pricing": [{"gpuModel": "A100", "pricePerGpuHour": 2.0}],
             "circuitBreaker": {"factor": 1.5, "window": "5m", "minRequests": 1000000, "action": "HoldScaleUp"}},
            autoscaling={"prometheusUrl": prom.url, "intervalSeconds": 5, "cooldownSeconds": 0,
                         "scaleDownStabilizationSeconds": 0, "targetOngoingRequests": 2}))
        cluster.add_node("gpu-a", gpus=8)
        crds("apply", "-f", str(EXAMPLE))
        cluster.wait_phase("chat-llama", "Running", timeout=30)

        def breaker() -> dict:
            return acc(cluster, "chat-llama").get("circuitBreaker") or {}

        # half a window at 1 worker GPU, steady: closed
        wait_for(lambda: breaker().get("reason") == "Steady", timeout=60, what="a steady breaker")
        assert breaker()["open"] is False and replicas(cluster)["middle"] == 1
        ray.load("middle", 6.0)  # load rises: middle 1 -> 3 (2 worker GPUs), and no more requests are served
        wait_for(lambda: replicas(cluster)["middle"] == 3, timeout=30, what="the first scale-up")
        b = wait_for(lambda: (x := breaker()).get("open") and x, timeout=60, what="the breaker to open")
        assert b["reason"] == "SpendOutpacedOutput" and b["since"]
        c = cond(cluster, "chat-llama", "CircuitBreakerOpen")
        assert c["status"] == "True" and "reset-circuit-breaker" in c["message"]
        ray.load("middle", 12.0)  # more load: 6 replicas wanted, held while the breaker is open
        held = wait_for(lambda: [e["message"] for e in cluster.events_for("chat-llama")
                                 if e["reason"] == "ScaleUpHeld"], timeout=30, what="ScaleUpHeld")
        assert "middle 3 -> 6 held" in held[0] and "circuit breaker open" in held[0]
        assert {"CircuitBreakerOpen"} <= {e["reason"] for e in cluster.events_for("chat-llama")
                                          if e["type"] == "Warning"}
        time.sleep(2)
        assert replicas(cluster)["middle"] == 3
        assert 'gensched_circuit_breaker_open{generativejob="chat-llama",namespace="default"} 1.0' in op.metrics()
        crds("annotate", "gj", "chat-llama", "gensched.io/reset-circuit-breaker=2025-01-01-admin")
        wait_for(lambda: replicas(cluster)["middle"] == 6, timeout=30, what="the held scale-up after the reset")
        b = wait_for(lambda: (x := breaker()).get("resetValue") and x, what="the reset recorded")
        assert b["resetValue"] == "2025-01-01-admin" and b["resetAt"]
        wait_for(lambda: "CircuitBreakerReset" in [e["reason"] for e in cluster.events_for("chat-llama")],
                 what="CircuitBreakerReset event")
    finally:
        ray.server.shutdown()


def test_the_chart_can_scrape_the_batch_pods_outputs_counter() -> None:
    import subprocess

    from tests.harness.tools import ROOT, tool

    helm = tool("helm")
    if helm is None:
        pytest.fail("helm not installed: run `make tools` (scripts/install-tools.sh)")
    chart = str(ROOT / "charts" / "gensched")
    out = subprocess.run([helm, "template", "rel", chart, "--set", "metrics.workloadPodMonitor.enabled=true"],
                         capture_output=True, text=True, check=True).stdout
    pm = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "PodMonitor"
              and d["metadata"]["name"].endswith("-workloads"))
    from gensched.controller.objects import MANAGED_BY, WORKLOAD_METRICS_PORT, batch_job

    assert pm["spec"]["selector"]["matchLabels"] == MANAGED_BY  # the labels the operator puts on its Jobs' pods
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    from gensched.api import GenerativeJobSpec

    spec = GenerativeJobSpec.model_validate(yaml.safe_load(batch("x"))["spec"])
    container = batch_job("x", "default", spec, {"apiVersion": "v1", "kind": "GenerativeJob",
                                                  "metadata": {"name": "x", "uid": "u"}})["spec"]["template"]["spec"]
    assert container["containers"][0]["ports"] == [{"name": "metrics", "containerPort": WORKLOAD_METRICS_PORT,
                                                    "protocol": "TCP"}]
    env = {e["name"]: e["value"] for e in container["containers"][0]["env"]}
    assert env["GENSCHED_METRICS_PORT"] == str(WORKLOAD_METRICS_PORT)
    bad = subprocess.run([helm, "template", "rel", chart, "--set", "metrics.workloadPodMonitor.interval=soon"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "workloadPodMonitor" in bad.stderr
