"""The Helm chart with the real helm binary; rendered manifests checked by kubernetes-validate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.harness.tools import ROOT, tool

pytestmark = pytest.mark.integration
CHART = ROOT / "charts" / "gensched"


@pytest.fixture(scope="module")
def helm() -> str:
    binary = tool("helm")
    if binary is None:
        pytest.fail("helm not installed: run `make tools` (scripts/install-tools.sh)")
    return binary


def render(helm: str, *sets: str) -> list[dict]:
    args = [helm, "template", "rel", str(CHART), "--namespace", "gensched", "--include-crds"]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_helm_lint_strict(helm: str) -> None:
    result = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_manifests_are_valid_kubernetes(helm: str, tmp_path: Path) -> None:
    docs = render(helm, "metrics.serviceMonitor.enabled=true")
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["CustomResourceDefinition", "CustomResourceDefinition", "ServiceAccount", "ClusterRole",
                            "ClusterRoleBinding", "Role", "RoleBinding", "Role", "RoleBinding", "Deployment",
                            "PodDisruptionBudget", "Service", "ServiceMonitor", "SchedulingPolicy"])
    core = [d for d in docs if d["kind"] not in ("ServiceMonitor", "SchedulingPolicy")]
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(core))
    validator = Path(sys.executable).parent / "kubernetes-validate"  # installed with the test extra
    result = subprocess.run([str(validator), "--strict", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_least_privilege_and_hardened_pod(helm: str) -> None:
    docs = {d["kind"]: d for d in render(helm)}
    for rule in docs["ClusterRole"]["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["resources"]["limits"]
    assert "ServiceMonitor" not in docs  # off by default


def test_chart_crds_are_the_generated_ones(helm: str) -> None:
    crds = {d["metadata"]["name"]: d for d in render(helm) if d["kind"] == "CustomResourceDefinition"}
    for f in (ROOT / "crds").glob("*.yaml"):
        committed = yaml.safe_load(f.read_text())
        assert crds[committed["metadata"]["name"]] == committed


def test_values_schema_rejects_bad_values(helm: str) -> None:
    bad = subprocess.run([helm, "template", "rel", str(CHART), "--set", "defaultPolicy.timing.mode=Sometimes"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "/defaultPolicy/timing/mode" in bad.stderr and "OffPeak" in bad.stderr


def test_namespaced_mode_and_default_policy_from_values(helm: str) -> None:
    docs = {d["kind"]: d for d in render(helm, "watchNamespaces={ml,batch}", "defaultPolicy.timing.mode=OffPeak")}
    args = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ml" in args and "--namespace=batch" in args
    assert docs["SchedulingPolicy"]["spec"]["timing"]["mode"] == "OffPeak"
    assert docs["SchedulingPolicy"]["spec"]["default"] is True


def test_webhook_mode_renders_tls_service_and_rbac(helm: str, tmp_path: Path) -> None:
    refused = subprocess.run([helm, "template", "rel", str(CHART), "--set", "webhook.enabled=true"],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "tlsSecret" in refused.stderr  # a TLS Secret is required
    docs = render(helm, "webhook.enabled=true", "webhook.tlsSecret=gensched-webhook-tls")
    dep = next(d for d in docs if d["kind"] == "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--webhook-host=rel-gensched-webhook.gensched.svc" in args and "--webhook-certfile=/tls/tls.crt" in args
    assert any(s["metadata"]["name"] == "rel-gensched-webhook" for s in docs if s["kind"] == "Service")
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert any("validatingwebhookconfigurations" in r["resources"] for r in role["rules"])
    path = tmp_path / "webhook.yaml"
    path.write_text(yaml.safe_dump_all([d for d in docs if d["kind"] not in ("SchedulingPolicy",)]))
    validator = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run([str(validator), "--strict", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_secret_access_is_namespaced_read_only_and_narrowable(helm: str) -> None:
    docs = render(helm)
    cluster_rules = [r for d in docs if d["kind"] == "ClusterRole" for r in d["rules"]]
    assert not any("secrets" in r["resources"] for r in cluster_rules)  # never cluster-wide
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-secrets"))
    assert role["metadata"]["namespace"] == "gensched"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    narrowed = next(d for d in render(helm, "carbonSecrets={em-token,watttime}")
                    if d["kind"] == "Role" and d["metadata"]["name"].endswith("-secrets"))
    assert narrowed["rules"][0]["resourceNames"] == ["em-token", "watttime"]
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    env = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "GENSCHED_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in env
