"""Kubernetes-convention conditions (type/status/reason/message/lastTransitionTime)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from gensched.api.base import KubeModel
from gensched.api.durations import rfc3339


class Condition(KubeModel):
    """One observation about the object, as ``metav1.Condition`` defines it."""

    type: str = Field(description="CamelCase kind of condition, e.g. Valid, Placed, Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase machine-readable reason.")
    message: str = Field(default="", description="What happened, and what to do about it.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, ge=0, description="Spec generation it was set for.")


def set_condition(
    conditions: list[dict],
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None = None,
) -> list[dict]:
    """Return a new list with ``type_`` set; lastTransitionTime moves only when status flips."""
    status_s = status if isinstance(status, str) else ("True" if status else "False")
    out: list[dict] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(cond)
            continue
        found = True
        changed = cond.get("status") != status_s
        new = dict(cond, status=status_s, reason=reason, message=message)
        if changed:
            new["lastTransitionTime"] = rfc3339(now)
        if generation is not None:
            new["observedGeneration"] = generation
        out.append(new)
    if not found:
        new = {"type": type_, "status": status_s, "reason": reason, "message": message,
               "lastTransitionTime": rfc3339(now)}
        if generation is not None:
            new["observedGeneration"] = generation
        out.append(new)
    return out
