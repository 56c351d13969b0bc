"""The operator's metrics: promtool-clean exposition, job labels, series removal, never raising."""

from __future__ import annotations

import math
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gensched.accounting import Limits, Usage, evaluate
from gensched.observe import metrics
from gensched.observe.metrics import OperatorMetrics
from tests.harness.tools import tool


@pytest.fixture
def reg() -> CollectorRegistry:
    return CollectorRegistry()


def exercise(m: OperatorMetrics) -> None:
    m.record_decision("Placed")
    m.record_decision("ScaledOperator")
    m.update_cluster(2500, 8000, 0.12, 2, by_model={"NVIDIA-A100-SXM4-80GB": (4.0, 2.0), "NVIDIA-L4": (4.0, 0.5)})
    m.record_carbon_saving(120.5)
    m.record_carbon_saving(-20.0)
    m.record_deferred()
    m.record_carbon_signal("default", 1_767_225_600)
    m.set_pending({("ml", "Unschedulable"): 3, ("web", "QuotaExceeded"): 1}, {"ml": 1_767_225_000, "web": 1.7e9})
    m.observe_admission_wait("ml", 42.0)
    m.record_preemption("Defragment")
    m.record_cycle(1, 3, 0, duration_seconds=0.004)
    m.set_leader("gensched-0", True)
    m.set_operator_replicas("web", "chat", {"attn": 2, "ffn": 4})
    m.record_job_accounting("ml", "synth", Usage(gpu_seconds=7200, measured_joules=1e6, modelled_joules=2e5,
                                                 gco2=90, gpu_cost=4, outputs=1000), "EUR", "items")
    m.record_namespace_usage("ml", "Month", Usage(gpu_seconds=7200, gpu_cost=4), "EUR")
    m.record_budget("ml", None, "Month", evaluate(Usage(gpu_cost=4), Limits(cost=5)))
    m.record_budget("ml", "synth", None, evaluate(Usage(gpu_seconds=7200), Limits(gpu_hours=4, gco2=100)))
    m.record_breaker("web", "chat", True)


def text(reg: CollectorRegistry) -> str:
    return generate_latest(reg).decode()


def test_exposition_passes_promtool_check_metrics(reg: CollectorRegistry) -> None:
    promtool = tool("promtool")
    if promtool is None:
        pytest.fail("promtool not installed: run `make tools` (scripts/install-tools.sh --prometheus)")
    exercise(OperatorMetrics(reg, version="9.9.9"))
    out = text(reg)
    result = subprocess.run([promtool, "check", "metrics"], input=out, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("gensched_pending_jobs", "gensched_pending_oldest_queued_timestamp_seconds",
                 "gensched_admission_wait_seconds_bucket", "gensched_preemptions_total",
                 "gensched_scheduling_cycles_total", "gensched_scheduling_cycle_duration_seconds_bucket",
                 "gensched_gpu_capacity", "gensched_gpu_allocated", 'gensched_build_info{version="9.9.9"} 1.0',
                 'gensched_leader{identity="gensched-0"} 1.0', "gensched_job_gpu_seconds_total",
                 "gensched_job_energy_joules_total", "gensched_job_emissions_grams_total", "gensched_job_cost_total",
                 "gensched_job_outputs_total", "gensched_namespace_cost", "gensched_budget_used_ratio",
                 "gensched_circuit_breaker_open", "gensched_carbon_extra_grams_total"):
        assert name in out, name


def test_job_series_use_generativejob_never_job(reg: CollectorRegistry) -> None:
    exercise(OperatorMetrics(reg))
    out = text(reg)
    assert "{job=" not in out and ',job="' not in out and "exported_job" not in out
    assert reg.get_sample_value("gensched_model_operator_replicas",
                                {"namespace": "web", "generativejob": "chat", "operator": "ffn"}) == 4
    assert reg.get_sample_value("gensched_job_energy_joules_total",
                                {"namespace": "ml", "generativejob": "synth", "source": "measured"}) == 1e6
    assert reg.get_sample_value("gensched_job_cost_total",
                                {"namespace": "ml", "generativejob": "synth", "currency": "EUR"}) == 4
    assert reg.get_sample_value("gensched_gpu_allocated", {"gpu_model": "NVIDIA-L4"}) == 0.5


def test_forget_job_removes_its_series_and_only_its(reg: CollectorRegistry) -> None:
    m = OperatorMetrics(reg)
    exercise(m)
    m.set_operator_replicas("web", "other", {"attn": 1})
    m.forget_job("web", "chat")
    m.forget_job("ml", "synth")
    out = text(reg)
    assert 'generativejob="chat"' not in out and 'generativejob="synth"' not in out
    assert 'generativejob="other"' in out
    assert 'gensched_budget_used_ratio{generativejob="",limit="maxCost",namespace="ml",period="Month"}' in out
    m.set_operator_replicas("web", "other", {"ffn": 2})  # an operator that went away is removed
    assert reg.get_sample_value("gensched_model_operator_replicas",
                                {"namespace": "web", "generativejob": "other", "operator": "attn"}) is None


def test_a_decision_is_counted_once_and_carbon_never_goes_down(reg: CollectorRegistry) -> None:
    m = OperatorMetrics(reg)
    m.record_decision("ScaledOperator")
    assert reg.get_sample_value("gensched_decisions_total", {"decision": "ScaledOperator"}) == 1
    m.record_carbon_saving(50)
    m.record_carbon_saving(-80)
    assert reg.get_sample_value("gensched_carbon_saved_grams_total") == 50
    assert reg.get_sample_value("gensched_carbon_extra_grams_total") == 80
    m.record_job_accounting("ml", "a", Usage(gpu_seconds=100))
    m.record_job_accounting("ml", "a", Usage(gpu_seconds=40))  # a stale report never lowers a counter
    assert reg.get_sample_value("gensched_job_gpu_seconds_total", {"namespace": "ml", "generativejob": "a"}) == 100


def test_bad_values_are_counted_never_raised(reg: CollectorRegistry) -> None:
    m = OperatorMetrics(reg)
    m.record_carbon_saving(math.nan)
    m.update_cluster(None, 1, 0.1, 1)  # type: ignore[arg-type]
    m.set_operator_replicas("ns", "j", {"op": "many"})  # type: ignore[dict-item]
    m.record_job_accounting("ns", "j", {"ledger": "garbage"})
    m.record_preemption("Whatever")
    assert reg.get_sample_value("gensched_metrics_errors_total", {"function": "record_carbon_saving"}) == 1
    assert reg.get_sample_value("gensched_metrics_errors_total", {"function": "update_cluster"}) == 1
    assert reg.get_sample_value("gensched_metrics_errors_total", {"function": "set_operator_replicas"}) == 1
    assert reg.get_sample_value("gensched_preemptions_total", {"reason": "Other"}) == 1


def test_names_the_controller_already_uses_keep_working() -> None:
    reg = metrics.REGISTRY
    before = reg.get_sample_value("gensched_decisions_total", {"decision": "LegacyCheck"}) or 0
    metrics.DECISIONS.labels(decision="LegacyCheck").inc()
    assert reg.get_sample_value("gensched_decisions_total", {"decision": "LegacyCheck"}) == before + 1
    extra = reg.get_sample_value("gensched_carbon_extra_grams_total") or 0
    metrics.CARBON_SAVED.inc(-5.0)  # used to raise: counters cannot go down
    assert reg.get_sample_value("gensched_carbon_extra_grams_total") == extra + 5
    metrics.MODEL_OPERATOR_REPLICAS.labels(job="legacy-ns/legacy", operator="mid").set(3)
    assert reg.get_sample_value("gensched_model_operator_replicas",
                                {"namespace": "legacy-ns", "generativejob": "legacy", "operator": "mid"}) == 3
    metrics.forget_job("legacy-ns", "legacy")
    assert reg.get_sample_value("gensched_model_operator_replicas",
                                {"namespace": "legacy-ns", "generativejob": "legacy", "operator": "mid"}) is None
    deferred = reg.get_sample_value("gensched_deferred_jobs_total") or 0
    metrics.DEFERRED.inc()
    assert reg.get_sample_value("gensched_deferred_jobs_total") == deferred + 1
    metrics.update_cluster(1000, 4000, 0.0, 1)
    assert reg.get_sample_value("gensched_gpu_capacity", {"gpu_model": ""}) == 4.0
