"""One reconcile pass's output: status fields, conditions and Events, written once at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kopf

from gensched.api import Phase
from gensched.api.conditions import set_condition
from gensched.controller import clock
from gensched.controller.kube import kube
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

    def condition(self, type_: str, ok: bool, reason: str, message: str) -> None:
        self._conditions = set_condition(self._conditions, type_, ok, reason, message, now(), self._gen)
        self.status["conditions"] = self._conditions

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
        for type_, reason, message in self.events:
            kopf.event(self.body, type=type_, reason=reason, message=message)
            metrics.DECISIONS.labels(decision=reason).inc()
