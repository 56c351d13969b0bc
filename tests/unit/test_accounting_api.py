"""API of accounting: the policy block, job budgets, status.accounting; bad budgets refused with the field."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from gensched.api import GenerativeJobSpec, SchedulingPolicySpec
from gensched.api.crdgen import crd_files
from gensched.api.errors import format_validation_error


def problems(model: type, doc: dict) -> list[str]:
    try:
        model.model_validate(doc)
    except ValidationError as exc:
        return [str(e) for e in format_validation_error(exc)]
    return []


JOB = {"mode": "Batch", "model": {"name": "m", "parametersBillions": 1, "image": "img"},
       "resources": {"gpus": 1}, "batch": {"input": "s3://in", "estimatedDuration": "2h"}}


def job(**budget: object) -> dict:
    return {**JOB, "budget": budget}


def test_policy_accounting_block_parses_with_defaults() -> None:
    spec = SchedulingPolicySpec.model_validate({"accounting": {
        "currency": "EUR", "pricing": [{"gpuModel": "A100", "pricePerGpuHour": 2.1}],
        "dcgm": {"enabled": True, "prometheusUrl": "http://prom:9090", "podLabel": "exported_pod"},
        "budgets": [{"namespace": "ml", "maxCost": 1000, "maxGCO2": 5e5, "period": "Month"},
                    {"namespace": "ml", "maxGpuHours": 48, "period": "24h", "warnAt": 0.9}],
        "circuitBreaker": {"factor": 3, "window": "30m", "action": "ScaleToMinimum"}}})
    acc = spec.accounting
    assert acc.currency == "EUR" and acc.pricing[0].price_per_gpu_hour == 2.1 and acc.dcgm.pod_label == "exported_pod"
    assert acc.budgets[1].warn_at == 0.9 and acc.budgets[0].max_gco2 == 5e5
    assert acc.circuit_breaker.action == "ScaleToMinimum" and acc.circuit_breaker.min_requests == 100
    assert SchedulingPolicySpec().accounting.circuit_breaker.action == "HoldScaleUp"


@pytest.mark.parametrize(("budget", "field"), [
    ({"namespace": "ml", "maxCost": 0}, "spec.accounting.budgets[0].maxCost"),
    ({"namespace": "ml", "maxGpuHours": -2}, "spec.accounting.budgets[0].maxGpuHours"),
    ({"namespace": "ml", "maxGCO2": 0.0}, "spec.accounting.budgets[0].maxGCO2"),
    ({"namespace": "ml"}, "spec.accounting.budgets[0]"),
    ({"namespace": "ml", "maxCost": 5, "warnAt": 0}, "spec.accounting.budgets[0].warnAt"),
    ({"namespace": "ml", "maxCost": 5, "period": "fortnight"}, "spec.accounting.budgets[0].period"),
    ({"namespace": "ml", "maxCost": 5, "period": "99999999999d"}, "spec.accounting.budgets[0].period"),
    ({"namespace": "ml", "maxCost": 5, "period": "10m"}, "spec.accounting.budgets[0].period"),
])
def test_bad_namespace_budgets_are_refused_naming_the_field(budget: dict, field: str) -> None:
    found = problems(SchedulingPolicySpec, {"accounting": {"budgets": [budget]}})
    assert found and found[0].startswith(field + ":"), found


def test_circuit_breaker_window_is_bounded() -> None:
    for window in ("30d", "1m"):
        found = problems(SchedulingPolicySpec, {"accounting": {"circuitBreaker": {"window": window}}})
        assert found and found[0].startswith("spec.accounting.circuitBreaker.window:"), found


def test_duplicates_are_refused() -> None:
    two = [{"namespace": "ml", "maxCost": 1}, {"namespace": "ml", "maxCost": 2}]
    assert any("listed twice" in p for p in problems(SchedulingPolicySpec, {"accounting": {"budgets": two}}))
    prices = [{"gpuModel": "A100", "pricePerGpuHour": 1}, {"gpuModel": "A100", "pricePerGpuHour": 2}]
    assert any("priced twice" in p for p in problems(SchedulingPolicySpec, {"accounting": {"pricing": prices}}))


def test_job_budget_limits() -> None:
    assert GenerativeJobSpec.model_validate(job(maxCost=50)).budget.max_cost == 50
    assert GenerativeJobSpec.model_validate(job(maxGpuHours=3, maxGCO2=900, warnAt=0.5)).budget.warn_at == 0.5
    assert any("below what the job needs" in p for p in problems(GenerativeJobSpec, job(maxGpuHours=1)))
    assert problems(GenerativeJobSpec, job(maxCost=0))[0].startswith("spec.budget.maxCost: 0 is not a usable limit")
    assert problems(GenerativeJobSpec, job())[0].startswith("spec.budget: a budget needs at least one")


def _props(node: dict, path: str) -> list[str]:
    """Paths of properties without a description under ``node``."""
    missing = []
    for name, sub in (node.get("properties") or {}).items():
        if not sub.get("description"):
            missing.append(f"{path}.{name}")
        missing += _props(sub, f"{path}.{name}")
        if "items" in sub:
            missing += _props(sub["items"], f"{path}.{name}[]")
    return missing


def test_every_accounting_field_is_described_for_kubectl_explain() -> None:
    def schema(name: str) -> dict:
        crd = yaml.safe_load(crd_files()[name].split("\n", 1)[1])
        return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]

    gj = schema("gensched.io_generativejobs.yaml")
    gsp = schema("gensched.io_schedulingpolicies.yaml")
    acc = gsp["spec"]["properties"]["accounting"]
    assert acc["description"] and acc["properties"]["budgets"]["items"]["properties"]["maxGCO2"]["exclusiveMinimum"]
    status = gj["status"]["properties"]["accounting"]
    assert set(status["properties"]) >= {"gpuHours", "energyKWh", "energySource", "gCO2", "cost", "currency",
                                         "outputs", "costPerOutput", "gpuSecondsPerOutput", "outputsPerKWh",
                                         "budget", "circuitBreaker", "ledger"}
    assert _props(acc, "accounting") == []
    assert _props(status, "status.accounting") == []
    assert _props(gj["spec"]["properties"]["budget"], "spec.budget") == []
