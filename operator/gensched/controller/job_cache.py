"""The operator's own view of every GenerativeJob, kept current by the watch (an informer cache).

Capacity-aware time plans compare a deferred job with every other job on every pass; asking the API
server for the whole list each time costs one LIST per deferred job per pass. The cache is primed
once at startup and then follows the watch events kopf already receives.
"""

from __future__ import annotations

import copy
import threading

_lock = threading.Lock()
_jobs: dict[tuple[str, str], dict] = {}


def prime(items: list[dict]) -> None:
    """Start from a full listing (startup); later watch events overwrite it object by object."""
    with _lock:
        for body in items:
            meta = body.get("metadata") or {}
            _jobs.setdefault((meta.get("namespace", ""), meta.get("name", "")), _slim(body))


def observe(event_type: str | None, body: dict) -> None:
    """Apply one watch event (None = listed at watch start, ADDED, MODIFIED, DELETED)."""
    meta = body.get("metadata") or {}
    key = (meta.get("namespace", ""), meta.get("name", ""))
    with _lock:
        if event_type == "DELETED":
            _jobs.pop(key, None)
        else:
            _jobs[key] = _slim(body)


def jobs() -> list[dict]:
    """Every known GenerativeJob (metadata, spec, status), as copies."""
    with _lock:
        return [copy.deepcopy(b) for b in _jobs.values()]


def clear() -> None:
    with _lock:
        _jobs.clear()


def _slim(body: dict) -> dict:
    meta = body.get("metadata") or {}
    return {"metadata": {"namespace": meta.get("namespace", ""), "name": meta.get("name", "")},
            "spec": copy.deepcopy(dict(body.get("spec") or {})),
            "status": copy.deepcopy(dict(body.get("status") or {}))}
