"""The informer caches: watch events and listings applied in order, never going back in time."""

from __future__ import annotations

from gensched.controller import job_cache
from gensched.controller.cache import CACHE, Cache


def obj(name: str, rv: int, ns: str = "default", **status: object) -> dict:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv)}, "spec": {"mode": "Batch"},
            "status": dict(status)}


def test_events_apply_in_order_and_an_older_one_is_ignored() -> None:
    c = Cache()
    c.observe("generativejobs", None, obj("a", 5, phase="Pending"))
    c.observe("generativejobs", "MODIFIED", obj("a", 7, phase="Placed"))
    c.observe("generativejobs", "MODIFIED", obj("a", 6, phase="Pending"))  # a late echo of an older write
    assert c.get("generativejobs", "default/a")["status"]["phase"] == "Placed"
    c.observe("generativejobs", "DELETED", obj("a", 8))
    assert c.get("generativejobs", "default/a") is None
    c.observe("generativejobs", "MODIFIED", obj("a", 7))  # an event from before the deletion
    assert c.get("generativejobs", "default/a") is None


def test_a_listing_replaces_the_store_and_repairs_missed_deletions() -> None:
    c = Cache()
    c.observe("jobs", None, obj("gone", 1))
    c.observe("jobs", None, obj("kept", 2))
    c.replace("jobs", [obj("kept", 3), obj("new", 4)])
    assert sorted(b["metadata"]["name"] for b in c.items("jobs")) == ["kept", "new"]
    assert c.get("jobs", "default/kept")["metadata"]["resourceVersion"] == "3"


def test_changes_mark_the_owning_job_for_a_pass_and_wake_the_loop() -> None:
    c = Cache()
    c.wake.clear()
    job = obj("j-job", 1)
    job["metadata"]["ownerReferences"] = [{"kind": "GenerativeJob", "name": "j"}]
    c.observe("jobs", "MODIFIED", job)
    assert c.wake.is_set() and c.take_dirty() == ["default/j"]
    assert c.take_dirty() == []


def test_copies_protect_the_cache() -> None:
    CACHE.clear()
    CACHE.observe("generativejobs", None, obj("x", 1, phase="Pending"))
    listed = job_cache.jobs()
    listed[0]["status"]["phase"] = "Hacked"
    assert CACHE.get("generativejobs", "default/x")["status"]["phase"] == "Pending"
    CACHE.clear()
