"""API models: validation messages name the field and the fix; derived GPU memory."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gensched.api import GenerativeJobSpec, SchedulingPolicySpec, format_validation_error
from gensched.api.durations import parse_duration, resolve_deadline
from gensched.api.sizing import model_memory_gib

BASE = {"mode": "Batch", "model": {"name": "m", "parametersBillions": 7, "image": "img"},
        "resources": {"gpus": 1}, "batch": {"input": "s3://x"}}


def spec(**over: object) -> dict:
    doc = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    for path, value in over.items():
        node = doc
        parts = path.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return doc


def errors(doc: dict) -> list[str]:
    with pytest.raises(ValidationError) as exc:
        GenerativeJobSpec.model_validate(doc)
    return [str(e) for e in format_validation_error(exc.value)]


def test_quantisation_shrinks_the_memory_need() -> None:
    assert model_memory_gib(7, "bf16") == pytest.approx(7e9 * 2 / 2**30 * 1.2 + 1, abs=0.01)
    assert model_memory_gib(7, "int4") < model_memory_gib(7, "int8") < model_memory_gib(7, "fp16")
    assert model_memory_gib(7, "fp16") == model_memory_gib(7, "bf16")


def test_derived_memory_is_spread_over_whole_gpus_and_overridable() -> None:
    two = GenerativeJobSpec.model_validate(spec(resources__gpus=2))
    one = GenerativeJobSpec.model_validate(spec())
    assert two.gpu_memory_gib() == pytest.approx(one.gpu_memory_gib() / 2, abs=0.01)
    fixed = GenerativeJobSpec.model_validate(spec(resources__gpuMemoryGiB=30))
    assert fixed.gpu_memory_gib() == 30


@pytest.mark.parametrize(("doc", "field", "hint"), [
    (spec(resources__gpus=1.5), "spec.resources.gpus", "whole number"),
    (spec(resources__gpus=9), "spec.resources.gpus", "less than or equal to 8"),
    (spec(resources__gpu=1), "spec.resources.gpu", "unknown field"),
    (spec(model__precision="fp8"), "spec.model.precision", "fp32"),
    (spec(batch__deadline="tomorrow"), "spec.batch.deadline", "RFC 3339"),
    (spec(batch__estimatedDuration="2 hours"), "spec.batch.estimatedDuration", "pattern"),
    ({**spec(), "batch": None}, "spec", "spec.batch is missing"),
])
def test_errors_name_the_field_and_the_fix(doc: dict, field: str, hint: str) -> None:
    found = errors(doc)
    assert any(e.startswith(field) and hint in e for e in found), found


def test_operator_groupings_must_cover_every_layer_once() -> None:
    serve = {"mode": "Serve", "model": {"name": "m", "parametersBillions": 7, "image": "i", "layers": 8},
             "resources": {"gpus": 1}, "serve": {"slo": {"ttftMs": 500, "tbtMs": 50}}}
    ok = dict(serve, serve={**serve["serve"], "operators": [{"name": "a", "layers": "0-3"},
                                                             {"name": "b", "layers": "4-7"}]})
    GenerativeJobSpec.model_validate(ok)
    gap = dict(serve, serve={**serve["serve"], "operators": [{"name": "a", "layers": "0-2"},
                                                              {"name": "b", "layers": "5-7"}]})
    assert any("skip layers 3-4" in e for e in errors(gap))
    dup = dict(serve, serve={**serve["serve"], "operators": [{"name": "a", "layers": "0-4"},
                                                              {"name": "b", "layers": "4-7"}]})
    assert any("layer 4 is in both 'a' and 'b'" in e for e in errors(dup))


def test_budget_below_need_is_refused() -> None:
    doc = spec(resources__gpus=2, batch__estimatedDuration="3h", budget={"maxGpuHours": 4})
    assert any("spec.budget" in e or "maxGpuHours" in e for e in errors(doc))


def test_durations_and_deadlines() -> None:
    assert parse_duration("1h30m").total_seconds() == 5400
    from datetime import UTC, datetime
    created = datetime(2026, 1, 1, tzinfo=UTC)
    assert resolve_deadline("12h", created) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert resolve_deadline("2026-01-02T00:00:00Z", created) == datetime(2026, 1, 2, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone"):
        resolve_deadline("2026-01-02T00:00:00", created)


def test_policy_defaults_and_timezone_check() -> None:
    p = SchedulingPolicySpec()
    assert (p.packing.strategy, p.timing.mode, p.autoscaling.granularity) == ("Gensched", "Immediate", "Operator")
    with pytest.raises(ValidationError, match="unknown timezone 'Mars/Olympus'"):
        SchedulingPolicySpec.model_validate({"timing": {"offPeakWindows": [
            {"start": "22:00", "end": "06:00", "timezone": "Mars/Olympus"}]}})
    with pytest.raises(ValidationError, match="offPeakWindows is empty"):
        SchedulingPolicySpec.model_validate({"timing": {"mode": "OffPeak"}})
