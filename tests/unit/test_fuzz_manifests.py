"""Fuzzing the API with malformed and hostile GenerativeJob and SchedulingPolicy specs.

Each generated spec starts from a valid one and has one to four fields replaced by hostile values
(huge numbers, huge durations, 10 KB strings, unicode and control characters, wrong types,
nested junk, boundary values) or unknown fields added. Every spec must either be refused with
messages that each name a field (``spec.<path>: ...``) and stay bounded in size, or, when valid,
go through the pure decisions without an exception: placement request and memory sizing, the
timing planner under the policy (fixed clock, a small synthetic carbon series), the Serve
feasibility check and operator plan, and ``gensched explain``'s report. Deterministic
(``derandomize``), about 2,000 specs in all.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gensched.api import GenerativeJobSpec, SchedulingPolicySpec, format_validation_error
from gensched.api.durations import parse_duration, resolve_deadline
from gensched.api.errors import FIELD_LIMIT, MESSAGE_LIMIT
from gensched.autoscale import operator_plan
from gensched.autoscale.feasibility import GpuType, check_serve
from gensched.packing.requests import request_for
from gensched.sim.explain import explain_documents
from gensched.timing import decide_start
from gensched.timing.planner import latest_end
from gensched.timing.series import Series

NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)  # a Tuesday
FORECAST = Series(NOW.replace(hour=0), timedelta(minutes=30),
                  300 + 120 * np.cos(np.arange(48 * 4) * 2 * np.pi / 48))  # four days, a daily cycle
GPUS = [GpuType("NVIDIA-A100-SXM4-80GB", 80.0), GpuType("NVIDIA-L4", 24.0)]
SETTINGS = settings(max_examples=700, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])

BATCH = {"mode": "Batch", "model": {"name": "llama-2-7b", "parametersBillions": 7, "precision": "int4",
                                    "image": "ghcr.io/x/y:1", "layers": 32},
         "resources": {"gpus": 0.25, "cpu": "2", "memory": "8Gi"},
         "batch": {"input": "s3://in", "deadline": "12h", "estimatedDuration": "2h", "interruptible": False},
         "budget": {"maxGpuHours": 10}, "priority": 5}
SERVE = {"mode": "Serve", "model": {"name": "llama-2-7b", "parametersBillions": 7, "precision": "bf16",
                                    "image": "ghcr.io/x/y:1", "layers": 32},
         "resources": {"gpus": 1},
         "serve": {"slo": {"ttftMs": 500, "tbtMs": 50, "percentile": 99}, "minReplicas": 1, "maxReplicas": 8,
                   "operators": [{"name": "a", "layers": "0-15"}, {"name": "b", "layers": "16-31"}]}}
WINDOW = {"days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "start": "22:00", "end": "06:00", "timezone": "Europe/Berlin",
          "pricePerKwh": 0.1}
POLICY = {"default": True, "packing": {"strategy": "Gensched"},
          "timing": {"mode": "OffPeak", "maxDeferral": "24h", "safetyMargin": "30m", "offPeakWindows": [WINDOW],
                     "holidays": ["2026-03-04"], "objective": "Weighted", "carbonWeight": 0.5,
                     "defaultPricePerKwh": 0.3, "smoothingSlots": 3, "gpuUtilization": 0.7,
                     "carbon": {"provider": "GBCarbonIntensity", "region": "13", "refresh": "15m", "maxAge": "6h"}},
          "autoscaling": {"granularity": "Operator", "intervalSeconds": 30},
          "queueing": {"backfill": True, "maxPreemptionsPerCycle": 4},
          "quotas": [{"namespace": "team-a", "maxGpus": 8, "period": "24h"}]}

JOB_PATHS = [
    ("mode",), ("model",), ("model", "name"), ("model", "parametersBillions"), ("model", "precision"),
    ("model", "layers"), ("model", "image"), ("model", "command"), ("model", "uri"),
    ("resources",), ("resources", "gpus"), ("resources", "gpuMemoryGiB"), ("resources", "cpu"),
    ("resources", "memory"), ("resources", "gpuModels"),
    ("batch",), ("batch", "input"), ("batch", "deadline"), ("batch", "estimatedDuration"), ("batch", "items"),
    ("batch", "interruptible"), ("budget",), ("budget", "maxGpuHours"), ("priority",), ("priorityClassName",),
    ("policyRef",), ("tolerations",), ("serve",), ("serve", "slo"), ("serve", "slo", "ttftMs"),
    ("serve", "slo", "tbtMs"), ("serve", "minReplicas"), ("serve", "maxReplicas"), ("serve", "operators"),
    ("serve", "operators", 0, "layers"), ("serve", "operators", 0, "name"), ("serve", "operators", 1, "gpus"),
    ("serve", "port"), ("unknownField",), ("model", "x" * 300),
]
POLICY_PATHS = [
    ("default",), ("packing", "strategy"), ("timing",), ("timing", "mode"), ("timing", "maxDeferral"),
    ("timing", "safetyMargin"), ("timing", "offPeakWindows"), ("timing", "offPeakWindows", 0, "timezone"),
    ("timing", "offPeakWindows", 0, "start"), ("timing", "offPeakWindows", 0, "end"),
    ("timing", "offPeakWindows", 0, "days"), ("timing", "offPeakWindows", 0, "pricePerKwh"), ("timing", "holidays"),
    ("timing", "objective"), ("timing", "carbonWeight"), ("timing", "defaultPricePerKwh"),
    ("timing", "smoothingSlots"), ("timing", "gpuUtilization"), ("timing", "carbon"),
    ("timing", "carbon", "provider"), ("timing", "carbon", "refresh"), ("timing", "carbon", "maxAge"),
    ("timing", "carbon", "csvPath"), ("timing", "carbon", "region"), ("timing", "carbon", "timeoutSeconds"),
    ("autoscaling", "intervalSeconds"), ("queueing", "cycleSeconds"), ("quotas",), ("quotas", 0, "period"),
    ("quotas", 0, "maxGpus"), ("quotas", 0, "namespace"), ("surprise",),
]

DURATIONS = st.one_of(
    st.sampled_from(["999999999d", "99999999999d", "9" * 400 + "d", "0s", "1s", "366d", "367d", "3660d",
                     "1.5h", "-1h", "1h30m", "24h", "", " ", "1x", "1e9d", "1d" * 40, "0.0000001s"]),
    st.builds(lambda n, u: f"{n}{u}", st.integers(0, 10**15), st.sampled_from("dhms")),
)
INSTANTS = st.sampled_from(["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00",
                            "2026-03-03T13:00:00Z", "2026-03-03T13:00:00", "2030-01-01T00:00:00Z",
                            "1969-12-31T23:59:59Z", "2026-02-30T00:00:00Z"])
TIMEZONES = st.sampled_from(["Europe", "America", "A" * 10_000, "../../etc/passwd", "/etc/localtime", "zone.tab",
                             "Europe/Berlin", "UTC", "Etc/GMT+14", "Mars/Olympus", "Europe/", "right/UTC", "\x00"])
SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(10**30), 10**30), st.sampled_from([0, -1, 1, 2**31, 2**63, 10**20, 8, 9, 1000, 1001]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 1e-308, 0.0005, 1.5, 0.999]),
    st.text(max_size=40), st.sampled_from(["x" * 10_000, "é" * 3000, "\x1b[31mred\x1b[0m\n", "\u202eevil", "🚀" * 50,
                                           "0-99999999999999999999", "99999999999999999999-0", "1Gi", "1.5", "Batch"]),
    DURATIONS, INSTANTS, TIMEZONES,
)
JUNK = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                    max_leaves=12)


NUMBERS = st.one_of(
    st.sampled_from([0, 1, 2, 0.25, 0.001, 0.0009, 0.5, 0.999, 1.5, 7, 8, 9, 12, 48, 100, 1000, 1024, 10_000, 65535,
                     65536, 1e9, 1e30, -1, -0.0, 2**31, 10**20]),
    st.floats(0, 1e6, allow_nan=False), st.integers(0, 10**6))
WORDS = st.one_of(st.text(max_size=30), st.sampled_from(["x" * 10_000, "a", "-", "team-a", "s3://in", "2", "500m",
                                                         "8Gi", "1.5Ti", "99999999999999999999Gi", "13", "DE"]))
HHMM = st.one_of(st.sampled_from(["00:00", "23:59", "24:00", "22:00", "06:00", "6:00", "12:60", "22:00:00"]),
                 st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 25), st.integers(0, 61)))
DAYS = st.lists(st.sampled_from(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "mon", "Funday"]), max_size=9)
DATES = st.lists(st.one_of(st.dates().map(str), st.sampled_from(["2026-02-30", "20260304", "tomorrow", ""])),
                 max_size=5)
LAYERS = st.sampled_from(["0-15", "16-31", "0-31", "5", "31-0", "0-99999999999999999999", "99999999999999999999",
                          "0-", "-1", "0-1023", "0-1024"])
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    **dict.fromkeys(["deadline"], st.one_of(DURATIONS, INSTANTS)),
    **dict.fromkeys(["estimatedDuration", "maxDeferral", "safetyMargin", "refresh", "maxAge", "period"], DURATIONS),
    **dict.fromkeys(["parametersBillions", "gpus", "gpuMemoryGiB", "maxGpuHours", "priority", "ttftMs", "tbtMs",
                     "minReplicas", "maxReplicas", "port", "layers", "items", "pricePerKwh", "carbonWeight",
                     "defaultPricePerKwh", "smoothingSlots", "gpuUtilization", "timeoutSeconds", "intervalSeconds",
                     "cycleSeconds", "maxGpus", "maxPreemptionsPerCycle"], NUMBERS),
    **dict.fromkeys(["name", "image", "input", "cpu", "memory", "csvPath", "region", "namespace", "uri",
                     "policyRef", "priorityClassName"], WORDS),
    "timezone": TIMEZONES, "start": HHMM, "end": HHMM, "days": DAYS, "holidays": DATES,
    "mode": st.sampled_from(["Batch", "Serve", "Immediate", "OffPeak", "CarbonAware", "batch", ""]),
    "precision": st.sampled_from(["fp32", "bf16", "fp16", "int8", "int4", "fp8"]),
    "strategy": st.sampled_from(["Gensched", "FGD", "GpuPacking", "BestFit", "FirstFit", "Random"]),
    "objective": st.sampled_from(["Emissions", "Cost", "Weighted", "Money"]),
    "provider": st.sampled_from(["CSV", "GBCarbonIntensity", "ElectricityMaps", "WattTime", "Prometheus", "Oracle"]),
    "default": st.booleans(), "interruptible": st.booleans(),
    "gpuModels": st.lists(WORDS, max_size=3), "command": st.lists(WORDS, max_size=3),
}


def _value(path: tuple, junk: bool = True) -> st.SearchStrategy[Any]:
    """Mostly values of the right kind (often at a boundary), else junk of any type."""
    key = path[-1]
    if key == "layers" and "operators" in path:
        plausible: st.SearchStrategy[Any] = LAYERS
    else:
        plausible = PLAUSIBLE.get(key, JUNK) if isinstance(key, str) else JUNK
    return st.one_of(plausible, plausible, JUNK) if junk else plausible


def _put(doc: dict, path: tuple, value: Any) -> None:
    node: Any = doc
    for key in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(key, {})
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return  # an earlier mutation replaced the container: nothing to put
    last = path[-1]
    if isinstance(node, dict) or (isinstance(node, list) and isinstance(last, int) and last < len(node)):
        node[last] = value


def mutated(base: dict, paths: list[tuple]) -> st.SearchStrategy[dict]:
    def build(edits: list[tuple[tuple, Any]]) -> dict:
        doc = copy.deepcopy(base)
        for path, value in edits:
            _put(doc, path, value)
        return doc
    edit = st.sampled_from(paths).flatmap(lambda p: st.tuples(st.just(p), _value(p)))
    near = st.sampled_from(paths).flatmap(lambda p: st.tuples(st.just(p), _value(p, junk=False)))
    return st.one_of(st.lists(edit, min_size=1, max_size=4), st.lists(near, min_size=1, max_size=2)).map(build)


def _check_refusal(exc: ValidationError) -> None:
    found = format_validation_error(exc)
    assert found, "a refusal must say why"
    for err in found:
        text = str(err)
        assert err.field.startswith("spec"), text
        assert text.startswith(err.field + ": ") and err.message, text
        assert len(err.field) <= FIELD_LIMIT and len(text) <= FIELD_LIMIT + 2 + MESSAGE_LIMIT // 2, text[:200]
        assert "\n" not in err.message and "\x1b" not in err.message, text[:200]


def _policy(doc: dict) -> SchedulingPolicySpec | None:
    try:
        spec = SchedulingPolicySpec.model_validate(doc)
    except ValidationError as exc:
        _check_refusal(exc)
        event("policy refused")
        return None
    event("policy valid")
    return spec


def _job(doc: dict) -> GenerativeJobSpec | None:
    try:
        spec = GenerativeJobSpec.model_validate(doc)
    except ValidationError as exc:
        _check_refusal(exc)
        event("job refused")
        return None
    event("job valid")
    return spec


def _plan_under(policy: SchedulingPolicySpec, job: GenerativeJobSpec) -> None:
    """The timing decision of a valid job under a valid policy respects the deadline rule."""
    b = job.batch
    deadline = resolve_deadline(b.deadline, NOW) if b and b.deadline else None
    est = parse_duration(b.estimated_duration) if b and b.estimated_duration else None
    forecast = FORECAST if policy.timing.mode == "CarbonAware" else None
    d = decide_start(NOW, policy.timing, deadline, est, forecast, interruptible=bool(b and b.interruptible))
    assert d.start >= NOW and len(d.reason) < 2000 and len(d.warning or "") < 2000
    if d.deferred:
        run = est or timedelta(hours=1)
        assert d.start + run <= latest_end(NOW, policy.timing, deadline, run) + timedelta(minutes=30)


def _decide(job: GenerativeJobSpec) -> None:
    req = request_for("fuzz", job)
    assert req.whole_gpus >= 0 and 0 < req.gpu_milli <= 1000 and req.gpu_memory_gib > 0
    assert job.gpu_memory_gib() > 0
    if job.serve is not None:
        plans = operator_plan(job)
        assert plans and all(p.gpus > 0 for p in plans)
        check_serve(job, GPUS)


@SETTINGS
@given(st.one_of(mutated(BATCH, JOB_PATHS), mutated(SERVE, JOB_PATHS)))
def test_hostile_jobs_are_refused_by_field_or_decided(doc: dict) -> None:
    job = _job(doc)
    if job is None:
        return
    _decide(job)
    for timing in ({"mode": "Immediate"}, POLICY["timing"], {**POLICY["timing"], "mode": "CarbonAware"}):
        _plan_under(SchedulingPolicySpec.model_validate({"timing": timing}), job)


@SETTINGS
@given(mutated(POLICY, POLICY_PATHS), st.sampled_from(["OffPeak", "CarbonAware", None]))
def test_hostile_policies_are_refused_by_field_or_plan_every_job(doc: dict, mode: str | None) -> None:
    if mode is not None and isinstance(doc.get("timing"), dict):
        doc["timing"].setdefault("mode", mode)
    policy = _policy(doc)
    if policy is None:
        return
    for base in (BATCH, {**BATCH, "batch": {**BATCH["batch"], "interruptible": True, "deadline": "3d",
                                            "estimatedDuration": "5h"}}):
        _plan_under(policy, GenerativeJobSpec.model_validate(base))


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated(POLICY, POLICY_PATHS), st.one_of(mutated(BATCH, JOB_PATHS), mutated(SERVE, JOB_PATHS)),
       st.one_of(JUNK, st.just({"name": "n" * 5000})))
def test_explain_reports_any_pair_without_crashing(policy: dict, job: dict, metadata: Any) -> None:
    docs = [{"kind": "SchedulingPolicy", "metadata": {"name": "p"}, "spec": policy},
            {"kind": "GenerativeJob", "metadata": metadata, "spec": job}]
    lines, invalid = explain_documents(docs, now=NOW)
    assert 0 <= invalid <= 2 and len(lines) >= 2
    assert all(len(line) < 1500 for line in lines)
    assert not any("could not work out" in line for line in lines), lines
