"""Every GenerativeJob as the watch-fed cache holds it (capacity-aware time plans compare each
deferred job with all others; the cache saves one LIST per deferred job per pass)."""

from __future__ import annotations

import copy

from gensched.controller.cache import CACHE


def jobs() -> list[dict]:
    """Every known GenerativeJob (metadata, spec, status), as copies."""
    out = []
    for body in CACHE.view("generativejobs"):
        meta = body.get("metadata") or {}
        out.append({"metadata": {"namespace": meta.get("namespace", ""), "name": meta.get("name", "")},
                    "spec": copy.deepcopy(dict(body.get("spec") or {})),
                    "status": copy.deepcopy(dict(body.get("status") or {}))})
    return out
