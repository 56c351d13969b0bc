"""What the informer caches do to stay cheap at thousands of objects (benchmarks/operator_burst.py):
the echo of a version already held costs no pass, Jobs are kept without their pod template, copies
are independent of the cache."""

from __future__ import annotations

from gensched.controller.cache import Cache


def gj(name: str, rv: int, **status: object) -> dict:
    return {"metadata": {"name": name, "namespace": "default", "resourceVersion": str(rv)},
            "spec": {"mode": "Batch"}, "status": dict(status)}


def job(name: str, rv: int) -> dict:
    return {"metadata": {"name": name, "namespace": "default", "resourceVersion": str(rv),
                         "labels": {"gensched.io/job": name}, "managedFields": [{"manager": "kubectl"}],
                         "annotations": {"gensched.io/placement": "{}"}},
            "spec": {"suspend": False, "template": {"spec": {"containers": [{"name": "main", "env": []}]}}},
            "status": {"active": 1}}


def test_the_echo_of_a_version_already_held_marks_no_job_for_a_pass() -> None:
    c = Cache()
    c.observe("generativejobs", "MODIFIED", gj("a", 5, phase="Pending"))  # a write's reply
    assert c.take_dirty() == ["default/a"]
    c.observe("generativejobs", "MODIFIED", gj("a", 5, phase="Pending"))  # its watch echo
    assert c.take_dirty() == []
    c.observe("generativejobs", "MODIFIED", gj("a", 6, phase="Placed"))  # a newer version still counts
    assert c.take_dirty() == ["default/a"]
    assert c.get("generativejobs", "default/a")["status"]["phase"] == "Placed"


def test_jobs_are_cached_without_their_pod_template_and_managed_fields() -> None:
    c = Cache()
    reply = job("j", 3)
    c.observe("jobs", "MODIFIED", reply)
    cached = c.peek("jobs", "default/j")
    assert "template" not in cached["spec"] and cached["spec"]["suspend"] is False
    assert "managedFields" not in cached["metadata"]
    assert cached["metadata"]["annotations"] == {"gensched.io/placement": "{}"}
    assert "template" in reply["spec"] and "managedFields" in reply["metadata"]  # the caller's object is whole
    c.replace("jobs", [job("j", 4)])
    assert "template" not in c.peek("jobs", "default/j")["spec"]
    assert c.peek("jobs", "default/j")["metadata"]["resourceVersion"] == "4"
    c.observe("generativejobs", None, {**gj("g", 1), "spec": {"template": {"kept": True}}})
    assert c.peek("generativejobs", "default/g")["spec"] == {"template": {"kept": True}}  # only Jobs lose it


def test_copies_are_independent_of_the_cache() -> None:
    c = Cache()
    c.observe("generativejobs", None, gj("a", 1, conditions=[{"type": "Valid", "status": "True"}]))
    mine = c.get("generativejobs", "default/a")
    mine["status"]["conditions"][0]["status"] = "False"
    mine["metadata"]["labels"] = {"x": "y"}
    again = c.items("generativejobs")[0]
    assert again["status"]["conditions"][0]["status"] == "True" and "labels" not in again["metadata"]
    assert c.peek("generativejobs", "default/a") is c.view("generativejobs")[0]  # peek: the object itself
