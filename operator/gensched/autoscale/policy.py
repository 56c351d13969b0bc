"""Per-operator replica decisions from observed load (pure): the autoscaler's control loop.

Each model operator (a Ray Serve deployment) is sized on its own: replicas = requests in flight
(queued + running, Little's law: rate x latency) / what one replica is sized for, within the job's
[minReplicas, maxReplicas]. Stability: scale up at once (at most ``scale_up_step`` at a time);
scale down only after the lower target has held for ``scale_down_stabilization_seconds`` and to the
highest target seen in that period; no change within ``cooldown_seconds`` of the previous one.
Missing observations never change anything (never scale to zero on missing data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Observation:
    rate_rps: float | None  # requests per second into this deployment
    ongoing: float | None  # requests queued or running at its replicas
    p99_ms: float | None = None


@dataclass(frozen=True)
class Limits:
    min_replicas: int
    max_replicas: int
    target_ongoing: float  # per replica
    latency_budget_ms: float | None = None  # p99 this operator may take (share of the TBT SLO)


@dataclass(frozen=True)
class Settings:
    cooldown_s: float = 60.0
    stabilization_s: float = 300.0
    scale_up_step: int = 4


@dataclass
class OperatorState:
    """What the loop remembers per operator (kept in the job's status, so restarts keep it)."""

    last_change: float = -math.inf
    recent: list[tuple[float, int]] = field(default_factory=list)  # (time, target) within stabilization


@dataclass(frozen=True)
class Change:
    name: str
    old: int
    new: int
    reason: str


def target_for(obs: Observation, limits: Limits, current: int) -> tuple[int | None, str]:
    if obs.ongoing is None:
        return None, "no data"
    want = math.ceil(obs.ongoing / limits.target_ongoing - 1e-9) if obs.ongoing > 0 else 0
    why = f"{obs.ongoing:.1f} in flight / {limits.target_ongoing:g} per replica"
    if (limits.latency_budget_ms is not None and obs.p99_ms is not None and obs.p99_ms > limits.latency_budget_ms
            and want <= current):
        want = current + 1
        why = f"p99 {obs.p99_ms:.0f} ms > budget {limits.latency_budget_ms:.0f} ms"
    return max(limits.min_replicas, min(limits.max_replicas, want)), why


def decide(now: float, current: dict[str, int], observed: dict[str, Observation], limits: dict[str, Limits],
           states: dict[str, OperatorState], settings: Settings) -> list[Change]:
    """Changes to apply now; updates ``states`` in place."""
    changes: list[Change] = []
    for name, cur in current.items():
        st = states.setdefault(name, OperatorState())
        obs = observed.get(name)
        lim = limits[name]
        if obs is None:
            continue
        want, why = target_for(obs, lim, cur)
        if want is None:
            continue
        # Samples inside the stabilization window, plus the last one before it (in force at its start).
        cut = now - settings.stabilization_s
        st.recent.append((now, want))
        older = [x for x in st.recent if x[0] < cut]
        st.recent = ([older[-1]] if older else []) + [x for x in st.recent if x[0] >= cut]
        if now - st.last_change < settings.cooldown_s:
            continue
        if want > cur:
            new = min(want, cur + settings.scale_up_step)
        elif want < cur:
            if settings.stabilization_s > 0:
                if st.recent[0][0] > cut or any(w >= cur for _, w in st.recent):
                    continue  # not low for long enough yet
                new = max(w for _, w in st.recent)  # the highest target of the stable period
                why += f", low for {settings.stabilization_s:.0f} s"
            else:
                new = want
        else:
            continue
        if cur < lim.min_replicas or cur > lim.max_replicas:
            new = max(lim.min_replicas, min(lim.max_replicas, new))
        if new != cur:
            st.last_change = now
            changes.append(Change(name, cur, new, why))
    return changes
