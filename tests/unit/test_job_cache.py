"""The operator's GenerativeJob cache follows watch events, including deletions, and hands out copies."""

from __future__ import annotations

from gensched.controller import job_cache


def gj(name: str, phase: str) -> dict:
    return {"metadata": {"namespace": "ns", "name": name, "managedFields": ["noise"]},
            "spec": {"mode": "Batch"}, "status": {"phase": phase}}


def test_cache_follows_listing_and_watch_events() -> None:
    job_cache.clear()
    job_cache.prime([gj("a", "Deferred"), gj("b", "Running")])
    job_cache.observe("MODIFIED", gj("a", "Placed"))
    job_cache.observe("ADDED", gj("c", "Pending"))
    job_cache.observe("DELETED", gj("b", "Running"))
    job_cache.prime([gj("a", "Deferred")])  # a late listing never overrides what the watch said
    got = {j["metadata"]["name"]: j["status"]["phase"] for j in job_cache.jobs()}
    assert got == {"a": "Placed", "c": "Pending"}
    copy = job_cache.jobs()[0]
    copy["status"]["phase"] = "Tampered"
    assert "Tampered" not in {j["status"]["phase"] for j in job_cache.jobs()}
    assert all("managedFields" not in j["metadata"] for j in job_cache.jobs())
    job_cache.clear()
