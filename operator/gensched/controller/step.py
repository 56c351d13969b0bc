"""One reconcile pass's output: status fields, conditions and Events, written once at the end.

The status is written as one merge patch with the object's resourceVersion as a precondition, so a
pass computed from an older version can never overwrite a newer status (Running -> Succeeded ->
Running). On a conflict nothing is written and no Event is posted: the job is marked for another pass,
which recomputes from the newer object (level-triggered). A pass that changes nothing costs no API call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gensched.api import Phase
from gensched.api.conditions import set_condition
from gensched.api.errors import bounded
from gensched.controller import clock, events
from gensched.controller.cache import CACHE
from gensched.controller.kube import ApiException, kube, outcome_unknown
from gensched.observe import metrics

log = logging.getLogger(__name__)


def now() -> datetime:
    return clock.now()


@dataclass
class Step:
    """What one reconcile pass wants written: status fields, conditions and Events."""

    body: dict
    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._old = dict(self.body.get("status") or {})
        self._conditions = list(self._old.get("conditions") or [])
        self._gen = self.body["metadata"].get("generation")
        self._set: dict[str, tuple[bool, str, str]] = {}
        self.written = False

    def condition(self, type_: str, ok: bool, reason: str, message: str) -> None:
        self._conditions = set_condition(self._conditions, type_, ok, reason, bounded(message), now(), self._gen)
        self._set[type_] = (ok, reason, message)

    def alert(self, type_: str, ok: bool, reason: str, message: str, event: str) -> None:
        """Set a condition and raise one Warning Event ``event`` only when it enters this status."""
        status = "True" if ok else "False"
        entered = not any(c.get("type") == type_ and c.get("status") == status
                          for c in self._old.get("conditions") or [])
        self.condition(type_, ok, reason, message)
        if entered:
            self.events.append(("Warning", event, message))

    @property
    def conditions(self) -> list[dict]:
        return self._conditions

    def phase(self, phase: Phase, message: str, event: tuple[str, str] | None = None, warn: bool = False) -> None:
        """Set phase+message; emit the event only when phase or message change (no spam on re-runs)."""
        message = bounded(message)
        self.status["phase"] = phase.value
        self.status["message"] = message
        self.status["observedGeneration"] = self._gen
        if event is not None and (self._old.get("message") != message or self._old.get("phase") != phase.value):
            self.events.append(("Warning" if warn else "Normal", event[0], event[1]))

    def changes(self) -> dict:
        """The status fields that differ from the object's (conditions included)."""
        out = {k: v for k, v in self.status.items() if self._old.get(k) != v}
        if self._set and self._conditions != list(self._old.get("conditions") or []):
            out["conditions"] = self._conditions
        return out

    def flush(self, patch: Any = None) -> bool:
        """Write the changes (if any) and then the Events. False when the write did not happen (conflict,
        unknown outcome, object gone): the job is marked for another pass."""
        meta = self.body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        change = self.changes()
        if change:
            try:
                reply = kube().patch_generativejob_status(ns, name, change,
                                                          resource_version=meta.get("resourceVersion"))
            except ApiException as exc:
                if exc.status == 404:
                    return False
                if exc.status == 409 or outcome_unknown(exc):
                    CACHE.mark(f"{ns}/{name}")
                    return False
                raise
            except Exception as exc:  # a timeout or a cut connection: outcome unknown, recompute later
                if not outcome_unknown(exc):
                    raise
                CACHE.mark(f"{ns}/{name}")
                return False
            if isinstance(reply, dict) and reply.get("metadata"):
                CACHE.observe("generativejobs", "MODIFIED", reply)
            self.written = True
        for type_, reason, message in self.events:
            events.post(self.body, type_, reason, message)
            try:
                metrics.DECISIONS.labels(decision=reason).inc()
            except Exception:  # metrics never stop a lifecycle
                log.exception("metrics update failed")
        return True
