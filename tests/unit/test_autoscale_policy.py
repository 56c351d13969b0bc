"""Per-operator replica decisions: independence, bounds, hysteresis, cool-down, missing data."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gensched.autoscale.policy import Limits, Observation, OperatorState, Settings, decide

LIM = Limits(min_replicas=1, max_replicas=8, target_ongoing=2.0)
FAST = Settings(cooldown_s=0, stabilization_s=60, scale_up_step=4)


def obs(ongoing: float | None, p99: float | None = None) -> Observation:
    return Observation(rate_rps=None if ongoing is None else ongoing, ongoing=ongoing, p99_ms=p99)


def test_each_operator_scales_on_its_own_load() -> None:
    states: dict[str, OperatorState] = {}
    changes = decide(0, {"attention": 1, "ffn": 1, "head": 1},
                     {"attention": obs(7.0), "ffn": obs(1.0), "head": obs(0.2)},
                     {"attention": LIM, "ffn": LIM, "head": LIM}, states, FAST)
    assert [(c.name, c.old, c.new) for c in changes] == [("attention", 1, 4)]
    assert "7.0 in flight" in changes[0].reason


def test_scale_up_is_capped_per_step_and_by_max() -> None:
    changes = decide(0, {"a": 1}, {"a": obs(100.0)}, {"a": LIM}, {}, FAST)
    assert changes[0].new == 5  # 1 + scale_up_step
    changes = decide(0, {"a": 7}, {"a": obs(100.0)}, {"a": LIM}, {}, FAST)
    assert changes[0].new == 8  # maxReplicas


def test_scale_down_waits_for_a_stable_period_and_keeps_its_highest_target() -> None:
    states: dict[str, OperatorState] = {}
    lims = {"a": LIM}
    assert decide(0, {"a": 6}, {"a": obs(12.0)}, lims, states, FAST) == []
    assert decide(30, {"a": 6}, {"a": obs(4.0)}, lims, states, FAST) == []  # target 2, not for 60 s yet
    assert decide(60, {"a": 6}, {"a": obs(6.0)}, lims, states, FAST) == []  # target 3
    assert decide(75, {"a": 6}, {"a": obs(2.0)}, lims, states, FAST) == []  # 12 was in force until 30
    changes = decide(95, {"a": 6}, {"a": obs(2.0)}, lims, states, FAST)
    assert [(c.old, c.new) for c in changes] == [(6, 3)]  # highest target of the last 60 s
    assert "low for 60 s" in changes[0].reason


def test_missing_data_never_changes_replicas() -> None:
    assert decide(0, {"a": 3}, {"a": obs(None)}, {"a": LIM}, {}, FAST) == []
    assert decide(0, {"a": 3}, {}, {"a": LIM}, {}, FAST) == []


def test_cooldown_and_latency_budget() -> None:
    states: dict[str, OperatorState] = {}
    slow = Limits(1, 8, 2.0, latency_budget_ms=50)
    s = Settings(cooldown_s=30, stabilization_s=0, scale_up_step=2)
    assert [c.new for c in decide(0, {"a": 2}, {"a": obs(3.0, p99=80)}, {"a": slow}, states, s)] == [3]
    assert decide(10, {"a": 3}, {"a": obs(20.0)}, {"a": slow}, states, s) == []  # cooling down
    assert [c.new for c in decide(31, {"a": 3}, {"a": obs(20.0)}, {"a": slow}, states, s)] == [5]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(0, 50)), min_size=1, max_size=40), st.integers(1, 8))
def test_replicas_stay_in_bounds_and_change_only_on_data(loads: list[float | None], start: int) -> None:
    states: dict[str, OperatorState] = {}
    cur = start
    lim = Limits(1, 8, 2.0)
    for t, load in enumerate(loads):
        changes = decide(t * 10.0, {"a": cur}, {"a": obs(load)}, {"a": lim}, states, Settings(20, 60, 3))
        if load is None:
            assert changes == []
        for c in changes:
            assert 1 <= c.new <= 8 and abs(c.new - c.old) >= 1
            assert c.new - c.old <= 3
            cur = c.new
