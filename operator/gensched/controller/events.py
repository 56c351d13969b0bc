"""Kubernetes Events about the objects gensched manages, written with the API client (bounded, never fatal).

An Event that cannot be written is logged and dropped: Events explain decisions, they never block them.
"""

from __future__ import annotations

import logging
import uuid

from gensched.api.durations import rfc3339
from gensched.api.errors import bounded
from gensched.controller import clock
from gensched.controller.kube import kube

log = logging.getLogger(__name__)
MESSAGE_LIMIT = 1024
COMPONENT = "gensched"


def post(obj: dict, type_: str, reason: str, message: str) -> None:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace") or "default"
    t = rfc3339(clock.now())
    body = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{bounded(meta.get('name', 'object'), 200)}.{uuid.uuid4().hex[:12]}", "namespace": ns},
        "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta.get("name"),
                           "namespace": ns, "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")},
        "type": type_, "reason": bounded(reason, 128), "message": bounded(message, MESSAGE_LIMIT),
        "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
        "firstTimestamp": t, "lastTimestamp": t, "count": 1,
    }
    try:
        kube().create_event(ns, body)
    except Exception as exc:  # an Event never stops a lifecycle
        log.warning("event %s on %s/%s not written: %s", reason, ns, meta.get("name"), bounded(exc, 300))
