"""Concurrent passes on one object never erase each other's conditions: each replays only its own
condition types on the latest list, with the resourceVersion as a precondition, retrying on 409."""

from __future__ import annotations

import copy

import pytest

from gensched.controller import step as step_mod
from gensched.controller.kube import ApiException
from gensched.controller.step import Step


class FakeKube:
    """A GenerativeJob's status with resourceVersion checks, like the API server's."""

    def __init__(self, obj: dict) -> None:
        self.obj = obj
        self.patches = 0

    def get_generativejob(self, namespace: str, name: str) -> dict:
        return copy.deepcopy(self.obj)

    def patch_generativejob_status(self, namespace: str, name: str, status: dict,
                                   resource_version: str | None = None) -> None:
        self.patches += 1
        if resource_version and resource_version != self.obj["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self.obj.setdefault("status", {}).update(status)
        self.obj["metadata"]["resourceVersion"] = str(int(self.obj["metadata"]["resourceVersion"]) + 1)


def job(conditions: list[dict], rv: str) -> dict:
    return {"metadata": {"namespace": "ns", "name": "j", "generation": 1, "resourceVersion": rv},
            "status": {"conditions": conditions}}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    k = FakeKube(job([], "1"))
    monkeypatch.setattr(step_mod, "kube", lambda: k)
    return k


def test_two_passes_from_the_same_snapshot_keep_both_conditions(fake: FakeKube) -> None:
    seen = copy.deepcopy(fake.obj)  # both passes start from this body
    a, b = Step(copy.deepcopy(seen)), Step(copy.deepcopy(seen))
    a.condition("Feasible", True, "Servable", "fits")
    b.condition("MetricsAvailable", False, "NoMetrics", "Prometheus is down")
    a.flush(None)
    b.flush(None)  # stale resourceVersion: 409, re-read, replay its own type only
    types = {c["type"]: c["status"] for c in fake.obj["status"]["conditions"]}
    assert types == {"Feasible": "True", "MetricsAvailable": "False"}


def test_an_unchanged_condition_costs_no_write_and_keeps_its_transition_time(fake: FakeKube) -> None:
    first = Step(copy.deepcopy(fake.obj))
    first.condition("Ready", True, "Serving", "up")
    first.flush(None)
    written = fake.patches
    since = fake.obj["status"]["conditions"][0]["lastTransitionTime"]
    again = Step(copy.deepcopy(fake.obj))
    again.condition("Ready", True, "Serving", "up")
    again.flush(None)
    assert fake.patches == written  # steady state: no API call
    assert fake.obj["status"]["conditions"][0]["lastTransitionTime"] == since


def test_endless_conflicts_give_up_quietly_for_the_next_pass(fake: FakeKube, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    def always_conflict(*_a: object, **_k: object) -> None:
        fake.patches += 1
        raise ApiException(status=409, reason="Conflict")

    monkeypatch.setattr(fake, "patch_generativejob_status", always_conflict)
    s = Step(copy.deepcopy(fake.obj))
    s.condition("Placed", False, "Unschedulable", "no room")
    s.flush(None)
    assert fake.patches == 5 and "not written after 5 conflicts" in caplog.text
