"""A pass writes its status once, with the object's resourceVersion as precondition: a pass computed from
an older object never overwrites a newer status; on a conflict nothing is written, no Event is posted and the
job is marked for another pass. A pass that changes nothing costs no API call."""

from __future__ import annotations

import copy

import pytest

from gensched.api import Phase
from gensched.controller import step as step_mod
from gensched.controller.cache import CACHE
from gensched.controller.kube import ApiException
from gensched.controller.step import Step


class FakeKube:
    """A GenerativeJob's status with resourceVersion checks, like the API server's."""

    def __init__(self, obj: dict) -> None:
        self.obj = obj
        self.patches = 0

    def patch_generativejob_status(self, namespace: str, name: str, status: dict,
                                   resource_version: str | None = None) -> dict:
        self.patches += 1
        if resource_version and resource_version != self.obj["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self.obj.setdefault("status", {}).update(status)
        self.obj["metadata"]["resourceVersion"] = str(int(self.obj["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(self.obj)


def job(rv: str, **status: object) -> dict:
    return {"apiVersion": "gensched.io/v1alpha1", "kind": "GenerativeJob",
            "metadata": {"namespace": "ns", "name": "j", "generation": 1, "resourceVersion": rv},
            "status": dict(status)}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    k = FakeKube(job("1"))
    monkeypatch.setattr(step_mod, "kube", lambda: k)
    posted: list[tuple] = []
    monkeypatch.setattr(step_mod.events, "post", lambda *a: posted.append(a))
    k.posted = posted  # type: ignore[attr-defined]
    CACHE.clear()
    return k


def test_a_pass_from_an_older_object_never_overwrites_a_newer_status(fake: FakeKube) -> None:
    seen = copy.deepcopy(fake.obj)
    first, stale = Step(copy.deepcopy(seen)), Step(copy.deepcopy(seen))
    first.phase(Phase.SUCCEEDED, "completed", ("Succeeded", "done"))
    assert first.flush() is True
    stale.phase(Phase.RUNNING, "running", ("Running", "running"))
    assert stale.flush() is False  # 409: nothing written
    assert fake.obj["status"]["phase"] == "Succeeded"
    assert [p[2] for p in fake.posted] == ["Succeeded"]  # the stale pass posted no Event
    assert "ns/j" in CACHE.take_dirty()  # and the job gets another pass
    assert CACHE.get("generativejobs", "ns/j")["status"]["phase"] == "Succeeded"  # the reply is cached


def test_conditions_and_fields_go_in_one_write_and_an_unchanged_pass_costs_nothing(fake: FakeKube) -> None:
    s = Step(copy.deepcopy(fake.obj))
    s.condition("Valid", True, "SpecAccepted", "ok")
    s.status["policy"] = "p"
    s.flush()
    assert fake.patches == 1 and fake.obj["status"]["conditions"][0]["type"] == "Valid"
    again = Step(copy.deepcopy(fake.obj))
    again.condition("Valid", True, "SpecAccepted", "ok")
    again.status["policy"] = "p"
    again.flush()
    assert fake.patches == 1


def test_messages_are_bounded(fake: FakeKube) -> None:
    s = Step(copy.deepcopy(fake.obj))
    s.phase(Phase.INVALID, "x" * 10_000, ("InvalidSpec", "y"))
    s.flush()
    assert len(fake.obj["status"]["message"]) <= 1024
