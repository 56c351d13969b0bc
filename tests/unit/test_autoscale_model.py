"""The modelled serving performance, sizing and trace replay behind `gensched simulate autoscale`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gensched.autoscale.perf import Allocation, iteration_ms, max_sequences
from gensched.autoscale.profiles import ModelProfile, ProfileError
from gensched.autoscale.roofline import profile
from gensched.autoscale.sizing import SLO, Load, predict, size
from gensched.sim.autoscale_sim import Trace, replay

H100_7B = profile("llama-7b", "h100")


def test_roofline_profile_has_the_published_shapes() -> None:
    p = H100_7B
    assert p.modelled and "roofline" in p.source
    weights = sum(o.weights_gib for o in p.operators)
    assert 12.0 < weights < 13.0  # 6.7 B parameters in bf16
    attn = next(o for o in p.operators if o.name == "attention")
    assert attn.kv_gib_per_token * 1024**2 == pytest.approx(512, rel=0.01)  # 0.5 MiB per token for Llama-2-7B
    assert profile("llama-7b", "a100").whole().step_base_ms > p.whole().step_base_ms  # less bandwidth
    with pytest.raises(ValueError, match="unknown model"):
        profile("gpt-5", "h100")


def test_iteration_time_grows_with_batch_context_and_chunk() -> None:
    ops = H100_7B.operators
    a = Allocation(("model",), (1,), (1.0,), False)
    base = iteration_ms(ops, a, 8, 1000, 0)
    assert iteration_ms(ops, a, 16, 1000, 0) > base
    assert iteration_ms(ops, a, 8, 4000, 0) > base
    assert iteration_ms(ops, a, 8, 1000, 512) > base
    # Two axes: on half a GPU compute takes twice as long, but half the SMs still reach all the bandwidth, so a
    # memory-bound decode step is far less than twice as slow; contention (stretch) slows its memory part.
    half = Allocation(("model",), (1,), (0.5,), False)
    assert base < iteration_ms(ops, half, 8, 1000, 0) < 1.2 * base
    assert iteration_ms(ops, half, 8, 1000, 4096) > 1.6 * iteration_ms(ops, a, 8, 1000, 4096)  # prefill: compute
    assert iteration_ms(ops, half, 8, 1000, 0, stretch=2.0) > 1.7 * base
    assert max_sequences(ops, a, 1000, 80.0) == pytest.approx((80 - 12.6) / (1000 * 512 / 1024**2), rel=0.02)


def test_sizing_meets_its_own_prediction_and_grows_with_load() -> None:
    ops, slo = H100_7B.operators, SLO(1000, 100)
    gpus = []
    for rate in (1, 10, 40):
        a = size(ops, (1.0,), False, Load(rate, 1000, 200), slo, 80)
        assert predict(ops, a, Load(rate, 1000, 200), slo, 80).feasible
        gpus.append(a.gpus)
    assert gpus == sorted(gpus) and gpus[-1] > gpus[0]
    with pytest.raises(ProfileError, match="relax the SLOs"):
        size(ops, (1.0,), False, Load(10, 1000, 200), SLO(1000, 5), 80, max_replicas=4)


def test_profile_file_must_name_every_operator(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    H100_7B.save(path)
    assert ModelProfile.load(path, expect=["attention", "ffn"]).names() == H100_7B.names()
    with pytest.raises(ProfileError, match="no entry for operator"):
        ModelProfile.load(path, expect=["attention", "vision-tower"])


def _trace(rate: float, seconds: int, seed: int = 0) -> Trace:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, seconds, int(rate * seconds)))
    return Trace(t, rng.integers(200, 1500, len(t)), rng.integers(20, 300, len(t)), "synthetic")


def test_replay_accounts_gpu_time_and_reacts_to_a_load_step() -> None:
    tr = _trace(2, 300)
    burst = _trace(30, 120, seed=1)
    tr = Trace(np.concatenate([tr.arrival, burst.arrival + 300]), np.concatenate([tr.prompt, burst.prompt]),
               np.concatenate([tr.output, burst.output]), "step")
    static = replay(tr, H100_7B, SLO(2000, 100), "static", (1.0, 2.0))
    model = replay(tr, H100_7B, SLO(2000, 100), "model", (1.0, 2.0))
    assert static.decisions == 0 and model.decisions >= 1
    assert model.peak_gpus > min(r[0] for r in model.replicas_timeline)  # scaled up for the step
    assert static.gpu_seconds == pytest.approx(static.peak_gpus * len(static.replicas_timeline) * 10, rel=0.05)
    assert 0 < model.slo_attainment <= 1 and model.energy_kwh > 0


def test_cli_writes_every_requested_key(tmp_path: Path) -> None:
    tr = _trace(3, 120)
    csv = tmp_path / "trace.csv"
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    rows += [f"2023-11-16 18:{int(t // 60):02d}:{t % 60:09.6f},{p},{o}"
             for t, p, o in zip(tr.arrival, tr.prompt, tr.output, strict=True)]
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "gensched.cli", "simulate", "autoscale", "--trace", str(csv),
                           "--model", "llama-7b", "--gpu", "h100", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())
    for strategy in ("static", "model_level", "per_operator", "prefill_decode"):
        r = got["strategies"][strategy]
        assert set(r) >= {"gpu_seconds", "gpu_seconds_fractional", "energy_kwh", "slo_attainment", "goodput_rps",
                          "ttft_p99_ms", "tbt_p99_ms"}
        assert r["gpu_seconds"] >= r["gpu_seconds_fractional"] - 1e-6  # whole GPUs after packing >= the shares
    assert "roofline" in got["modelled"] and "SLO att." in proc.stdout


def test_serve_feasibility_names_the_problem_and_the_closest_setting() -> None:
    import yaml

    from gensched.api import GenerativeJobSpec
    from gensched.autoscale.feasibility import GpuType, check_serve
    from tests.harness.tools import ROOT

    doc = yaml.safe_load((ROOT / "workloads/examples/serve-llama-operators.yaml").read_text())["spec"]
    h100 = [GpuType("NVIDIA-H100-80GB-HBM3", 80.0)]
    assert check_serve(GenerativeJobSpec.model_validate(doc), h100) == []
    huge = {**doc, "model": {**doc["model"], "parametersBillions": 1000},
            "serve": {**doc["serve"], "slo": {"ttftMs": 5000, "tbtMs": 1000}}}
    problems = check_serve(GenerativeJobSpec.model_validate(huge), h100)
    assert {p.reason for p in problems} == {"ModelTooLarge"}
    assert "operator middle needs" in problems[1].message
    assert "split it into at least 15 operators" in problems[1].message
    strict = {**doc, "serve": {**doc["serve"], "slo": {"ttftMs": 500, "tbtMs": 0.5}}}
    problems = check_serve(GenerativeJobSpec.model_validate(strict), h100)
    assert [p.reason for p in problems] == ["SLOUnreachable"] and "set tbtMs >=" in problems[0].message
    assert check_serve(GenerativeJobSpec.model_validate(huge), []) == []  # no GPUs known yet: no verdict
