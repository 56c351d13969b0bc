"""The torch language model and its split into model operators (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gensched_workloads.model import EOS, DecoderLM, ModelConfig, encode, generate
from gensched_workloads.operators import OperatorRunner, generate_split, split

GROUPINGS = [
    [("all", 0, 3)],
    [("a", 0, 1), ("b", 2, 3)],
    [("a", 0, 0), ("b", 1, 1), ("c", 2, 2), ("d", 3, 3)],
]


@pytest.mark.parametrize("groups", GROUPINGS)
def test_split_generation_equals_the_whole_model(groups: list[tuple[str, int, int]]) -> None:
    model = DecoderLM.seeded(seed=3)
    runners = [OperatorRunner(model, s) for s in split(4, groups)]
    for prompt in ("hello world", "generative AI on shared GPUs", "x"):
        ids = encode(prompt)
        assert generate_split(runners, ids, 24, EOS) == generate(model, ids, 24)


def test_kv_cache_matches_full_recompute() -> None:
    model = DecoderLM.seeded(seed=1)
    ids = torch.tensor([encode("cache me if you can")])
    full, _ = model(ids)
    head, past = model(ids[:, :-3])
    tail, _ = model(ids[:, -3:], past, start=ids.shape[1] - 3)
    assert torch.allclose(torch.cat([head, tail], dim=1), full, atol=1e-5)


def test_weights_round_trip(tmp_path: Path) -> None:
    model = DecoderLM.seeded(ModelConfig(n_layers=2, d_model=32, n_heads=2, d_ff=64), seed=5)
    model.save(tmp_path / "m")
    again = DecoderLM.load(tmp_path / "m")
    ids = encode("same weights, same words")
    assert generate(again, ids, 16) == generate(model, ids, 16)


@pytest.mark.parametrize(("groups", "message"), [
    ([("a", 0, 1), ("b", 3, 3)], "exactly once"),  # skips layer 2
    ([("a", 0, 2), ("b", 2, 3)], "exactly once"),  # repeats layer 2
])
def test_bad_groupings_are_refused(groups: list[tuple[str, int, int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split(4, groups)


def test_profiler_measures_every_operator_and_writes_a_loadable_profile(tmp_path: Path) -> None:
    from gensched.autoscale.profiles import ModelProfile
    from gensched_workloads.profiler import main as profile_main

    out = tmp_path / "profile.json"
    assert profile_main(["--operators", "early:0-1,late:2-3", "--out", str(out), "--batches", "1,4,16",
                         "--contexts", "32,256", "--prompts", "16,128", "--repeats", "3"]) == 0
    prof = ModelProfile.load(out, expect=["early", "late"])
    assert not prof.modelled and "measured on cpu" in prof.source
    for op in prof.operators:
        assert op.step_base_ms >= 0 and op.weights_gib > 0  # a fit on a loaded machine may put the base at 0
        assert op.step_ms(16, 256) > op.step_ms(1, 32)  # more work takes longer on a real CPU
        assert op.prefill_ms(128) > op.prefill_ms(16)
    # the measured file is what the operator sizes replicas from (spec.serve.profile)
    from gensched.autoscale.targets import operator_targets

    slow = sum(op.step_ms(1, 256) for op in prof.operators)
    got = operator_targets(prof, {"early": 0.0, "late": 0.0}, tbt_ms=4 * slow, ctx_tokens=256)
    assert all(t.target_ongoing >= 1 and t.step_ms <= t.budget_ms + 1e-9 for t in got.values())
