"""One reconcile pass's output: status fields, conditions and Events, written once at the end.

Conditions are written apart from the other status fields. Handlers of one object can run at the same
time (kopf runs timers beside event handlers), and a merge patch replaces the whole ``conditions`` list,
so each pass replays only the condition types it set onto the object's latest list, with the
resourceVersion as a precondition, and retries on a conflict: no pass erases another's conditions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kopf

from gensched.api import Phase
from gensched.api.conditions import set_condition
from gensched.controller import clock
from gensched.controller.kube import ApiException, kube
from gensched.observe import metrics


def now() -> datetime:
    return clock.now()


@dataclass
class Step:
    """What one reconcile pass wants written: status fields, conditions and at most one Event."""

    body: dict
    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._conditions = list((self.body.get("status") or {}).get("conditions") or [])
        self._gen = self.body["metadata"].get("generation")
        self._set: dict[str, tuple[bool, str, str]] = {}

    def condition(self, type_: str, ok: bool, reason: str, message: str) -> None:
        self._conditions = set_condition(self._conditions, type_, ok, reason, message, now(), self._gen)
        self._set[type_] = (ok, reason, message)

    def alert(self, type_: str, ok: bool, reason: str, message: str, event: str) -> None:
        """Set a condition and raise one Warning Event ``event`` only when it enters this status (the
        next passes re-assert it quietly)."""
        status = "True" if ok else "False"
        entered = not any(c.get("type") == type_ and c.get("status") == status
                          for c in (self.body.get("status") or {}).get("conditions") or [])
        self.condition(type_, ok, reason, message)
        if entered:
            self.events.append(("Warning", event, message))

    @property
    def conditions(self) -> list[dict]:
        """The conditions as this pass leaves them (on the list the pass started from)."""
        return self._conditions

    def phase(self, phase: Phase, message: str, event: tuple[str, str] | None = None, warn: bool = False) -> None:
        """Set phase+message; emit the event only when the message changes (no spam on re-runs)."""
        old = self.body.get("status") or {}
        self.status["phase"] = phase.value
        self.status["message"] = message
        self.status["observedGeneration"] = self._gen
        if event is not None and (old.get("message") != message or old.get("phase") != phase.value):
            self.events.append(("Warning" if warn else "Normal", event[0], event[1]))

    def flush(self, patch: kopf.Patch | None) -> None:
        """Write through kopf's patch (handlers on this object) or the API (other handlers)."""
        meta = self.body["metadata"]
        if self.status:
            if patch is not None:
                for k, v in self.status.items():
                    patch.status[k] = v
            else:
                kube().patch_generativejob_status(meta["namespace"], meta["name"], self.status)
        if self._set:
            self._write_conditions()
        for type_, reason, message in self.events:
            kopf.event(self.body, type=type_, reason=reason, message=message)
            metrics.DECISIONS.labels(decision=reason).inc()

    def _replay(self, base: list[dict]) -> list[dict]:
        out = list(base)
        for type_, (ok, reason, message) in self._set.items():
            out = set_condition(out, type_, ok, reason, message, now(), self._gen)
        return out

    def _write_conditions(self, attempts: int = 5) -> None:
        meta = self.body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        base = list((self.body.get("status") or {}).get("conditions") or [])
        version = meta.get("resourceVersion")
        for _ in range(attempts):
            merged = self._replay(base)
            if merged == base:
                return  # nothing new: no write (steady state costs no API call)
            try:
                kube().patch_generativejob_status(ns, name, {"conditions": merged}, resource_version=version)
                return
            except ApiException as exc:
                if exc.status == 404:
                    return  # the object is gone
                if exc.status != 409:
                    raise
            fresh = kube().get_generativejob(ns, name)
            if fresh is None:
                return
            base = list((fresh.get("status") or {}).get("conditions") or [])
            version = fresh["metadata"].get("resourceVersion")
        logging.getLogger(__name__).warning("%s/%s: conditions %s not written after %d conflicts; the next pass "
                                            "writes them", ns, name, sorted(self._set), attempts)
