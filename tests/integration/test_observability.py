"""The chart's HA settings, dashboard, alerts and PodMonitor: real helm, promtool and a real Prometheus.

The dashboard test backfills a Prometheus with three hours of series produced by the operator's own
metrics code (``OperatorMetrics`` fed by ``accounting``), then runs every panel's queries with the
dashboard's variables substituted, so a panel naming a metric or label that the operator does not
export fails here.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from gensched.accounting import Ledger, Limits, Prices, Sample, Usage, advance, evaluate
from gensched.api.crdgen import crd_files
from gensched.observe.metrics import OperatorMetrics
from tests.harness.prometheus import PrometheusServer
from tests.harness.tools import ROOT, tool

pytestmark = pytest.mark.integration
CHART = ROOT / "charts" / "gensched"
OPTIONAL = ("dashboards.enabled=true", "alerts.enabled=true", "metrics.rayPodMonitor.enabled=true")


@pytest.fixture(scope="module")
def helm() -> str:
    binary = tool("helm")
    if binary is None:
        pytest.fail("helm not installed: run `make tools` (scripts/install-tools.sh)")
    return binary


@pytest.fixture(scope="module")
def promtool() -> str:
    binary = tool("promtool")
    if binary is None:
        pytest.fail("promtool not installed: run `make tools` (scripts/install-tools.sh --prometheus)")
    return binary


def render(helm: str, *sets: str) -> list[dict]:
    args = [helm, "template", "rel", str(CHART), "--namespace", "gensched"]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def one(docs: list[dict], kind: str, name_suffix: str = "") -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, (kind, name_suffix, [d["metadata"]["name"] for d in found])
    return found[0]


# -- HA and RBAC --------------------------------------------------------------------------------
def test_two_replicas_pdb_rolling_update_and_rbac_for_leases(helm: str, tmp_path: Path) -> None:
    docs = render(helm, *OPTIONAL)
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = dep["spec"]["template"]["spec"]
    assert pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["GENSCHED_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and pdb["spec"]["selector"]["matchLabels"] == \
        dep["spec"]["selector"]["matchLabels"]
    rules = {(g, r): set(rule["verbs"]) for rule in one(docs, "ClusterRole")["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert rules[("", "pods")] == {"get", "list", "watch"}
    assert rules[("scheduling.k8s.io", "priorityclasses")] == {"get", "list", "watch"}
    assert {"create", "patch"} <= rules[("", "events")] and {"create", "patch"} <= rules[("events.k8s.io", "events")]
    lease = one(docs, "Role", "-leader")
    assert lease["metadata"]["namespace"] == "gensched"
    assert lease["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                               "verbs": ["get", "list", "watch", "create", "update", "patch"]}]
    binding = one(docs, "RoleBinding", "-leader")
    assert binding["roleRef"]["name"] == lease["metadata"]["name"]
    core = [d for d in docs if d["kind"] not in ("PodMonitor", "PrometheusRule", "SchedulingPolicy")]
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(core))
    validator = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run([str(validator), "--strict", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    single = render(helm, "replicaCount=1")
    assert not [d for d in single if d["kind"] == "PodDisruptionBudget"]  # a PDB of 1 would block drains
    assert one(single, "Deployment")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_observability_objects_are_off_by_default_and_labelled_when_on(helm: str) -> None:
    kinds = {d["kind"] for d in render(helm)}
    assert not kinds & {"ConfigMap", "PrometheusRule", "PodMonitor"}
    docs = render(helm, *OPTIONAL, "dashboards.namespace=monitoring", "alerts.labels.release=kps")
    cm = one(docs, "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["namespace"] == "monitoring"
    dash = json.loads(cm["data"]["gensched.json"])
    assert dash["uid"] == "gensched" and len(dash["panels"]) > 20
    assert one(docs, "PrometheusRule")["metadata"]["labels"]["release"] == "kps"
    pm = one(docs, "PodMonitor")
    assert pm["spec"]["selector"] == {"matchLabels": {"ray.io/is-ray-node": "yes"}}
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize(("setting", "where"), [
    ("resources.requests.cpu=lots", "/resources/requests/cpu"),
    ("resources.limit.cpu=1", "/resources"),
    ("resources.requests.gpu=1", "/resources/requests"),
    ("defaultPolicy.timing.bogus=1", "/defaultPolicy/timing"),
    ("defaultPolicy.packing.stratgy=FGD", "/defaultPolicy/packing"),
    ("defaultPolicy.autoscaling.intervalSecond=5", "/defaultPolicy/autoscaling"),
    ("defaultPolicy.accounting.budgets[0].namespace=ml", "/defaultPolicy/accounting/budgets/0"),  # no limit
    ("defaultPolicy.accounting.currency=euro", "/defaultPolicy/accounting/currency"),
    ("alerts.budgetWarnRatio=2", "/alerts/budgetWarnRatio"),
    ("replicaCount=0", "/replicaCount"),
])
def test_values_schema_rejects_unknown_policy_keys_and_malformed_resources(helm: str, setting: str,
                                                                           where: str) -> None:
    bad = subprocess.run([helm, "template", "rel", str(CHART), "--set", setting], capture_output=True, text=True)
    assert bad.returncode != 0 and where in bad.stderr, bad.stderr


def test_values_policy_blocks_accept_exactly_the_crd_fields(helm: str) -> None:
    crd = yaml.safe_load(crd_files()["gensched.io_schedulingpolicies.yaml"].split("\n", 1)[1])
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    values = json.loads((CHART / "values.schema.json").read_text())["properties"]["defaultPolicy"]["properties"]
    for block in ("packing", "timing", "autoscaling", "queueing", "accounting"):
        assert set(values[block]["properties"]) == set(spec[block]["properties"]), (
            f"defaultPolicy.{block} in charts/gensched/values.schema.json differs from the CRD: add or remove keys")
    assert set(values["quotas"]["items"]["properties"]) == set(spec["quotas"]["items"]["properties"])
    sp = one(render(helm, "defaultPolicy.accounting.budgets[0].namespace=ml",
                    "defaultPolicy.accounting.budgets[0].maxCost=100", "defaultPolicy.queueing.backfill=false"),
             "SchedulingPolicy")
    assert sp["spec"]["accounting"]["budgets"] == [{"namespace": "ml", "maxCost": 100}]
    assert sp["spec"]["queueing"] == {"backfill": False}
    from gensched.api.policy import SchedulingPolicySpec

    SchedulingPolicySpec.model_validate(sp["spec"])  # what the chart renders, the operator accepts


# -- alerts ---------------------------------------------------------------------------------------
def rules_file(helm: str, tmp_path: Path) -> Path:
    rule = one(render(helm, "alerts.enabled=true"), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def test_alert_rules_pass_promtool_and_fire_when_they_should(helm: str, promtool: str, tmp_path: Path) -> None:
    rules = rules_file(helm, tmp_path)
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS: 8 rules found" in check.stdout, check.stdout + check.stderr
    series = [
        ('gensched_pending_oldest_queued_timestamp_seconds{namespace="ml"}', "0x120"),
        ('gensched_budget_used_ratio{namespace="ml",period="Month",limit="maxCost"}', "0.5x10 0.85x30 1.2x60"),
        ('gensched_circuit_breaker_open{namespace="web",generativejob="chat"}', "0x10 1x60"),
        ('gensched_leader{identity="gensched-0"}', "1x30 0x60"),
        ('gensched_last_scheduling_cycle_timestamp_seconds', "0+60x40 2400x60"),  # cycles stop at 40m
        ('gensched_carbon_signal_timestamp_seconds{policy="default"}', "0x200"),
        ('gensched_metrics_errors_total{function="update_cluster"}', "0x5 1x60"),
    ]
    warn, crit = {"severity": "warning"}, {"severity": "critical"}

    def alert(name: str, at: str, *expected: dict) -> dict:
        return {"eval_time": at, "alertname": name, "exp_alerts": list(expected)}

    def exp(labels: dict, summary: str, description: str | None = None) -> dict:
        out: dict = {"exp_labels": labels, "exp_annotations": {"summary": summary}}
        if description is not None:
            out["exp_annotations"]["description"] = description
        return out

    rule = {g["alert"]: g for g in yaml.safe_load(rules.read_text())["groups"][0]["rules"]}

    def desc(name: str) -> str:
        return rule[name]["annotations"]["description"]

    tests = [
        alert("GenschedJobPendingTooLong", "50m"),  # 3000 s < 3600 s
        alert("GenschedJobPendingTooLong", "70m", exp(
            {**warn, "namespace": "ml"}, "GenerativeJobs in ml have waited over 3600s",
            "The oldest waiting job was queued 1h 10m 0s ago; `kubectl get gj -n ml` shows the queue reason "
            "(quota, budget, no room).")),
        alert("GenschedBudgetNearlyExhausted", "5m"),
        alert("GenschedBudgetNearlyExhausted", "20m", exp(
            {**warn, "namespace": "ml", "period": "Month", "limit": "maxCost"},
            "Budget maxCost of ml  is 85% used", desc("GenschedBudgetNearlyExhausted"))),
        alert("GenschedBudgetNearlyExhausted", "60m"),  # exhausted now: the other alert
        alert("GenschedBudgetExhausted", "60m", exp(
            {**warn, "namespace": "ml", "period": "Month", "limit": "maxCost"},
            "Budget maxCost of ml  is exhausted", desc("GenschedBudgetExhausted"))),
        alert("GenschedCircuitBreakerOpen", "15m", exp(
            {**warn, "namespace": "web", "generativejob": "chat"},
            "Spend circuit breaker open for Serve job web/chat", desc("GenschedCircuitBreakerOpen"))),
        alert("GenschedNoLeader", "20m"),
        alert("GenschedNoLeader", "40m", exp(crit, "No gensched replica holds the leader Lease",
                                              desc("GenschedNoLeader"))),
        alert("GenschedNotReconciling", "45m"),
        alert("GenschedNotReconciling", "60m", exp(crit, "gensched ran no scheduling cycle for over 600s",
                                                    desc("GenschedNotReconciling"))),
        alert("GenschedCarbonSignalStale", "100m"),  # 6000 s < 7200 s
        alert("GenschedCarbonSignalStale", "135m", exp(
            {**warn, "policy": "default"}, "Carbon signal of SchedulingPolicy default is stale",
            "Its newest value is 2h 15m 0s old: deferral decisions fall back to history or run now.")),
        alert("GenschedMetricsErrors", "10m", exp({"severity": "info", "function": "update_cluster"},
                                                   "gensched skipped metric updates (update_cluster)",
                                                   desc("GenschedMetricsErrors"))),
    ]
    spec = {"rule_files": [rules.name], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series],
                       "alert_rule_test": tests}]}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    run = subprocess.run([promtool, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


# -- the dashboard against a real Prometheus ------------------------------------------------------
def _om_line(name: str, labels: dict[str, str], value: float, ts: float) -> str:
    lab = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{lab}}} {value!r} {ts:.0f}" if lab else f"{name} {value!r} {ts:.0f}"


def snapshots_to_openmetrics(snaps: list[tuple[float, list[Metric]]]) -> str:
    """OpenMetrics text of registry snapshots (one family at a time, each series in time order)."""
    families: dict[str, tuple[str, dict[tuple, list[tuple[float, float, str, dict]]]]] = {}
    for ts, fams in snaps:
        for fam in fams:
            kind = "counter" if fam.type == "counter" else fam.type
            _, series = families.setdefault(fam.name, (kind, {}))
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                key = (s.name, tuple(sorted(s.labels.items())))
                series.setdefault(key, []).append((ts, s.value, s.name, s.labels))
    out = []
    for name, (kind, series) in families.items():
        out.append(f"# TYPE {name} {kind}")
        for key in sorted(series):
            for ts, value, sname, labels in series[key]:
                out.append(_om_line(sname, labels, value, ts))
    return "\n".join(out) + "\n# EOF\n"


def drive(end: datetime, minutes: int) -> str:
    """Three hours of a small cluster: two namespaces, a batch job, a Serve job, budgets, deferrals."""
    snaps: list[tuple[float, list[Metric]]] = []
    reg = CollectorRegistry()
    m = OperatorMetrics(reg, version="0.1.0-test")
    prices = Prices(per_gpu_hour={"A100": 2.5, "L4": 0.8}, carbon_intensity=230.0, periods=("Month",))
    jobs = {("ml", "synth"): ("NVIDIA-A100-SXM4-80GB", 2.0, "items"),
            ("web", "chat"): ("NVIDIA-L4", 1.0, "requests")}
    ledgers = {k: Ledger() for k in jobs}
    start = end - timedelta(minutes=minutes)
    m.set_leader("gensched-0", True)
    for i in range(minutes + 1):
        t = start + timedelta(minutes=i)
        ts = t.timestamp()
        replicas = 1 + (i // 40) % 3
        m.update_cluster(0, 0, 0.05 + 0.001 * (i % 50), 3, by_model={
            "NVIDIA-A100-SXM4-80GB": (8.0, 2.0 + (i % 4)), "NVIDIA-L4": (4.0, float(replicas))})
        m.set_pending({("ml", "QuotaExceeded"): 1 + i % 3, ("web", "Unschedulable"): i % 2},
                      {"ml": ts - 300 - 5 * i, "web": ts - 60})
        m.record_cycle(1, 2, 0, duration_seconds=0.002 + 0.0001 * (i % 7), now=ts)
        if i % 3 == 0:
            m.observe_admission_wait("ml" if i % 2 else "web", 30.0 + 10 * (i % 11))
        if i % 10 == 0:
            m.record_preemption(("Preempted", "Defragment", "Budget")[i // 10 % 3])
            m.record_decision("Placed")
        if i % 20 == 0:
            m.record_carbon_saving(40.0 if i % 60 else -5.0)
        if i % 30 == 0:
            m.record_deferred()
        m.record_carbon_signal("default", ts - 900)
        m.set_operator_replicas("web", "chat", {"attention": replicas, "ffn": 2 * replicas})
        ns_usage: dict[str, Usage] = {}
        for (ns, name), (model, gpus, unit) in jobs.items():
            g = gpus * (replicas if name == "chat" else 1)
            led = advance(ledgers[(ns, name)], Sample(t, gpus=g, gpu_model=model, outputs=37.0 * i,
                                                      power_watts=250.0 * g if i % 2 else None), prices)
            ledgers[(ns, name)] = led
            m.record_job_accounting(ns, name, led, "EUR", unit)
            ns_usage[ns] = led.bucket("Month", t)
            m.record_budget(ns, name, None, evaluate(led.total, Limits(gpu_hours=50, cost=100)))
        for ns, u in ns_usage.items():
            m.record_namespace_usage(ns, "Month", u, "EUR")
            m.record_budget(ns, None, "Month", evaluate(u, Limits(cost=40, gco2=5000)))
        m.record_breaker("web", "chat", replicas == 3)
        snaps.append((ts, copy.deepcopy(list(reg.collect()))))
    return snapshots_to_openmetrics(snaps)


def panel_queries(dashboard: dict) -> list[tuple[str, str]]:
    out = []
    for p in dashboard["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    return out


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def test_every_dashboard_panel_returns_series_from_operator_metrics(
        prometheus_server: Callable[..., PrometheusServer]) -> None:
    dashboard = json.loads((CHART / "dashboards" / "gensched.json").read_text())
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "namespace"]
    end = (datetime.now(UTC) - timedelta(hours=4)).replace(second=0, microsecond=0)  # behind the head block
    prom = prometheus_server(backfill=drive(end, 180))
    at = end.timestamp()
    ns_var = next(v for v in dashboard["templating"]["list"] if v["name"] == "namespace")
    match = re.fullmatch(r"label_values\((\w+), (\w+)\)", ns_var["query"]["query"])
    assert match is not None
    labels = requests.get(f"{prom.url}/api/v1/label/{match[2]}/values",
                          params={"match[]": match[1], "start": at - 3600, "end": at}, timeout=10).json()
    assert set(labels["data"]) == {"ml", "web"}
    variables = {"namespace": ns_var["allValue"], "__rate_interval": "5m", "__interval": "1m", "__range": "3h"}
    empty = []
    queries = panel_queries(dashboard)
    assert len(queries) >= 30
    for title, expr in queries:
        q = substitute(expr, variables)
        body = requests.get(f"{prom.url}/api/v1/query", params={"query": q, "time": at}, timeout=10).json()
        assert body["status"] == "success", (title, q, body)
        if not body["data"]["result"]:
            empty.append(f"{title}: {q}")
    assert empty == [], "panels without series:\n" + "\n".join(empty)
    # a couple of values checked against what was fed in
    def value(q: str) -> float:
        r = requests.get(f"{prom.url}/api/v1/query", params={"query": q, "time": at}, timeout=10).json()
        return float(r["data"]["result"][0]["value"][1])

    assert value('max(gensched_leader{identity="gensched-0"})') == 1
    assert value('sum by (namespace) (gensched_job_gpu_seconds_total{namespace="ml"}) / 3600') == \
        pytest.approx(2.0 * 3, rel=0.01)  # 2 GPUs for 3 hours
    single = substitute(next(e for t, e in queries if t == "GPU-hours by namespace"),
                        {**variables, "namespace": "web"})
    r = requests.get(f"{prom.url}/api/v1/query", params={"query": single, "time": at}, timeout=10).json()
    assert {s["metric"]["namespace"] for s in r["data"]["result"]} == {"web"}  # the variable filters
