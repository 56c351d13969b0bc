"""Per-operator sizing from a profile: heavy operators get more of the TBT budget yet serve fewer
sequences per replica; the step at the target fits the budget and one more sequence would not."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gensched.autoscale.profiles import ModelProfile, OperatorProfile, ProfileError
from gensched.autoscale.roofline import profile as roofline
from gensched.autoscale.sizing import HEADROOM
from gensched.autoscale.targets import MAX_TARGET, operator_targets


def _op(name: str, base: float, per_seq: float, per_kctx: float = 0.0) -> OperatorProfile:
    return OperatorProfile(name, 1.0, 0.0, base, per_seq, per_kctx, 0.0, 0.0)


def _profile(*ops: OperatorProfile, gpu: str = "cpu") -> ModelProfile:
    return ModelProfile("toy", gpu, 80.0, 0.0, 0.0, ops, modelled=False, source="test")


def test_heavy_operator_gets_more_budget_and_a_smaller_target() -> None:
    prof = _profile(_op("light", 1.0, 0.1), _op("heavy", 4.0, 2.0))
    got = operator_targets(prof, {"light": 0.0, "heavy": 0.0}, tbt_ms=50, ctx_tokens=0)
    assert got["heavy"].budget_ms > got["light"].budget_ms
    assert got["heavy"].target_ongoing < got["light"].target_ongoing
    assert sum(t.budget_ms for t in got.values()) == pytest.approx(HEADROOM * 50)
    # heavy: budget 40 x 6/7.2 = 33.3 ms -> (33.3 - 4) / 2 = 14 sequences
    assert got["heavy"].target_ongoing == 14


@given(base=st.floats(0.01, 20), per=st.floats(0.001, 5), kctx=st.floats(0, 2), ctx=st.integers(0, 8000),
       tbt=st.floats(5, 500), share=st.sampled_from([0.25, 0.5, 1.0]))
def test_target_is_the_largest_batch_within_budget(base: float, per: float, kctx: float, ctx: int, tbt: float,
                                                    share: float) -> None:
    prof = _profile(_op("a", base, per, kctx), _op("b", 1.0, 0.5), gpu="h100")
    try:
        got = operator_targets(prof, {"a": share, "b": share}, tbt, ctx)
    except ProfileError as exc:
        assert "tbtMs >=" in str(exc)  # infeasible only when batch 1 already misses the budget
        one = (prof.operators[0].step_ms(1, ctx) + prof.operators[1].step_ms(1, ctx)) / share
        assert one > HEADROOM * tbt
        return
    for name, t in got.items():
        op = next(o for o in prof.operators if o.name == name)
        assert t.target_ongoing >= 1
        assert op.step_ms(t.target_ongoing, ctx) / share <= t.budget_ms + 1e-6
        if t.target_ongoing < MAX_TARGET:
            assert op.step_ms(t.target_ongoing + 1, ctx) / share > t.budget_ms - 1e-6


def test_gpu_shares_slow_replicas_down_but_cpu_profiles_are_as_measured() -> None:
    ops = (_op("a", 1.0, 0.5), _op("b", 1.0, 0.5))
    whole = operator_targets(_profile(*ops, gpu="h100"), {"a": 1.0, "b": 1.0}, 40, 0)
    half = operator_targets(_profile(*ops, gpu="h100"), {"a": 0.5, "b": 1.0}, 40, 0)
    assert half["a"].target_ongoing < whole["a"].target_ongoing
    cpu = operator_targets(_profile(*ops), {"a": 0.5, "b": 1.0}, 40, 0)
    assert cpu["a"].target_ongoing == whole["a"].target_ongoing


def test_bad_profiles_name_the_operator_or_the_slo_to_set() -> None:
    prof = _profile(_op("a", 10.0, 1.0), _op("b", 10.0, 1.0))
    with pytest.raises(ProfileError, match=r"no entry for operator\(s\) \['c'\]"):
        operator_targets(prof, {"a": 0, "c": 0}, 100, 0)
    with pytest.raises(ProfileError, match=r"tbtMs >= 28"):  # 22 ms per token at batch 1 / 0.8
        operator_targets(prof, {"a": 0, "b": 0}, 20, 0)
    with pytest.raises(ProfileError, match="not a gensched profile"):
        ModelProfile.from_json(json.dumps({"model": "x"}))
    with pytest.raises(ProfileError, match="not a gensched profile"):
        ModelProfile.from_json("{not json")


def test_modelled_llama_operators_get_different_targets() -> None:
    """On the roofline Llama-2-7B, the per-operator targets differ, so the same load scales them apart."""
    prof = roofline("llama-7b", "h100")
    shares = {op.name: 0.5 for op in prof.operators}
    got = operator_targets(prof, shares, tbt_ms=100, ctx_tokens=2048)
    assert len({t.target_ongoing for t in got.values()}) > 1
