"""The profiler writes, for each typed operator (diffusion stages, MoE attention and expert groups),
a measured latency curve in the format the operator reads (``ModelProfile``, ``autoscale.targets``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gensched.autoscale.profiles import ModelProfile
from gensched.autoscale.targets import operator_targets
from gensched_workloads.profiler import main


def test_diffusion_profile_is_read_by_the_operator(tmp_path: Path) -> None:
    out = tmp_path / "sd.json"
    assert main(["--workload", "diffusion", "--config", "toy", "--grid", "1x16,2x16,1x32", "--repeats", "1",
                 "--rename", "denoiser=unet", "--out", str(out)]) == 0
    names = ["text-encoder", "unet", "controlnet", "vae-decoder"]
    prof = ModelProfile.load(out, expect=names)
    assert not prof.modelled and prof.gpu == "cpu"
    unet = next(o for o in prof.operators if o.name == "unet")
    assert unet.type == "Denoiser" and {(r[0], r[1]) for r in unet.points} == {(1, 64), (2, 64), (1, 256)}
    assert all(r[2] > 0 for o in prof.operators for r in o.points) and unet.weights_gib > 0
    # what the operator does with it: a target per deployed operator within its share of the step budget
    targets = operator_targets(prof, dict.fromkeys(names, 1.0), tbt_ms=10_000, ctx_tokens=64)
    assert set(targets) == set(names) and all(t.target_ongoing >= 1 for t in targets.values())


def test_moe_profile_times_each_expert_group_on_its_routed_tokens(tmp_path: Path) -> None:
    out = tmp_path / "moe.json"
    assert main(["--workload", "moe", "--experts", "hot:0-1,cold:2-7", "--batches", "1,8", "--contexts", "16,64",
                 "--repeats", "1", "--out", str(out)]) == 0
    prof = ModelProfile.load(out, expect=["embedding", "attention", "hot", "cold"])
    kinds = {o.name: (o.type, o.group) for o in prof.operators}
    assert kinds["hot"] == ("Experts", "experts") and kinds["attention"] == ("Attention", "")
    attention = next(o for o in prof.operators if o.name == "attention")
    assert attention.kv_gib_per_token > 0 and len(attention.points) == 4  # batch x context


def test_decoder_still_needs_its_layer_groups(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x.json")])
