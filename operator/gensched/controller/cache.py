"""Watch-fed caches of everything the scheduler reads (an informer per kind), and the loop's wake-up.

kopf's watch handlers only call ``observe``; the reconcile loop reads copies. Objects never go back in
time: an event older than what the cache holds is ignored, and so is one of the version it holds (the
watch echo of a write whose response was already stored: nothing changed, no pass is due). ``replace``
applies a fresh LIST (startup and periodic resync), which also repairs a lost watch event.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable

KINDS = ("nodes", "pods", "jobs", "generativejobs", "policies", "priorityclasses", "rayservices")


def _rv(body: dict) -> int | None:
    raw = (body.get("metadata") or {}).get("resourceVersion")
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


_SCALARS = (str, int, float, bool, type(None))


def _copy(obj: object) -> object:
    """A deep copy of JSON-shaped data (what the API returns): several times faster than copy.deepcopy,
    which the loop paid for every job it looked at."""
    t = type(obj)
    if t is dict:
        return {k: _copy(v) for k, v in obj.items()}  # type: ignore[attr-defined]
    if t is list:
        return [_copy(v) for v in obj]  # type: ignore[attr-defined]
    if t in _SCALARS:
        return obj
    return copy.deepcopy(obj)


def _trim(kind: str, body: dict) -> dict:
    """What the cache keeps of an object: all of it but the fields the operator never reads back, as
    client-go's informer transforms do: ``metadata.managedFields`` (every kind) and a Job's pod template
    (``spec.template``, most of a Job: 30 of 43 MB at 5,000 Jobs). A new dict: the caller's (a write's
    reply, kopf's body) stays whole."""
    spec, meta = body.get("spec"), body.get("metadata")
    if kind == "jobs" and isinstance(spec, dict) and "template" in spec:
        body = {**body, "spec": {k: v for k, v in spec.items() if k != "template"}}
    if isinstance(meta, dict) and "managedFields" in meta:
        body = {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return body


def key_of(body: dict) -> str:
    meta = body.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def _owner(body: dict) -> str | None:
    meta = body.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "GenerativeJob":
            return ref.get("name")
    return (meta.get("labels") or {}).get("gensched.io/job")


class Cache:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._store: dict[str, dict[str, dict]] = {k: {} for k in KINDS}
        self._deleted: dict[str, dict[str, int]] = {k: {} for k in KINDS}  # tombstones: RV at deletion
        self.wake = threading.Event()
        self._dirty: set[str] = set()  # GenerativeJobs to reconcile soon
        self.primed = threading.Event()

    def observe(self, kind: str, event: str | None, body: dict) -> None:
        """Apply one watch event (None = listed at watch start, ADDED, MODIFIED, DELETED) or a write's reply."""
        key = key_of(body)
        rv = _rv(body)
        with self._lock:
            store, tomb = self._store[kind], self._deleted[kind]
            old = store.get(key)
            if event == "DELETED":
                store.pop(key, None)
                if rv is not None:
                    tomb[key] = rv
            else:
                old_rv = _rv(old) if old else tomb.get(key)
                if rv is not None and old_rv is not None and rv < old_rv:
                    return  # older than what we hold
                if old is not None and rv is not None and rv == old_rv:
                    return  # this very version is held (the watch echo of a write whose reply was stored)
                tomb.pop(key, None)
                store[key] = _trim(kind, body)
                if kind == "policies" and old is not None and old.get("spec") == body.get("spec"):
                    self.wake.set()  # a status-only change (the operator's own write): no job needs a pass
                    return
            self._touched(kind, key, body)

    def _touched(self, kind: str, key: str, body: dict) -> None:
        if kind == "generativejobs":
            self._dirty.add(key)
        elif kind in ("jobs", "rayservices"):
            owner = _owner(body)
            ns = (body.get("metadata") or {}).get("namespace")
            if owner and ns:
                self._dirty.add(f"{ns}/{owner}")
        elif kind == "policies":
            self._dirty.update(self._store["generativejobs"])
        self.wake.set()

    def replace(self, kind: str, items: Iterable[dict]) -> None:
        """A full listing: objects not in it are gone (unless a newer version arrived meanwhile)."""
        fresh = {key_of(b): _trim(kind, b) for b in items}
        with self._lock:
            store = self._store[kind]
            for key in list(store):
                if key not in fresh:
                    store.pop(key)
                    self._touched(kind, key, {})
            for key, body in fresh.items():
                old = store.get(key)
                if old is not None and (_rv(old) or 0) > (_rv(body) or 0):
                    continue
                store[key] = body
                self._touched(kind, key, body)

    def get(self, kind: str, key: str) -> dict | None:
        with self._lock:
            body = self._store[kind].get(key)
        # copied outside the lock: stored objects are replaced, never changed in place
        return _copy(body) if body is not None else None  # type: ignore[return-value]

    def peek(self, kind: str, key: str) -> dict | None:
        """The cached object itself, no copy (read-only by convention, like ``view``): for the many reads
        per cycle that only look (a deep copy of every waiting job per cycle was most of its cost)."""
        with self._lock:
            return self._store[kind].get(key)

    def items(self, kind: str) -> list[dict]:
        """Copies of every cached object of ``kind``."""
        with self._lock:
            bodies = list(self._store[kind].values())
        return [_copy(b) for b in bodies]  # type: ignore[misc]

    def view(self, kind: str) -> list[dict]:
        """The cached objects themselves (read-only by convention; cheaper for big snapshots)."""
        with self._lock:
            return list(self._store[kind].values())

    def count(self, kind: str) -> int:
        with self._lock:
            return len(self._store[kind])

    def mark(self, *keys: str) -> None:
        with self._lock:
            self._dirty.update(keys)
        self.wake.set()

    def mark_all(self) -> None:
        with self._lock:
            self._dirty.update(self._store["generativejobs"])
        self.wake.set()

    def take_dirty(self) -> list[str]:
        with self._lock:
            out, self._dirty = sorted(self._dirty), set()
            return out

    def clear(self) -> None:
        with self._lock:
            for k in KINDS:
                self._store[k].clear()
                self._deleted[k].clear()
            self._dirty.clear()


CACHE = Cache()
