"""The serving simulator behind `gensched simulate autoscale --workload diffusion|moe|llm`: arrivals from
any CSV, the two-axis sharing model, packing-based GPU counting, the diffusion discrete-event replay,
prefill/decode disaggregation, the MoE profile, and the CLI's interface and errors (issue 10; issue 12)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gensched.autoscale.opmodel import BW_REACH, Cost, call_ms, time_ms
from gensched.autoscale.roofline import diffusion_profile, moe_profile, profile
from gensched.autoscale.sizing import SLO
from gensched.sim import autoscale_diffusion as ad
from gensched.sim.autoscale_des import DeploymentSpec, Strategy, replay
from gensched.sim.autoscale_packing import GpuCounter
from gensched.sim.autoscale_pd import replay_pd
from gensched.sim.autoscale_sim import Trace
from gensched.sim.autoscale_sim import replay as replay_llm
from gensched.sim.autoscale_workloads import (
    EXPERT_POPULARITY,
    ImageRequests,
    TraceError,
    diffusion_requests,
    load_arrivals,
)

H100_SD = diffusion_profile("h100")


def write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# -- arrivals -----------------------------------------------------------------------------------------

def test_any_csv_with_a_timestamp_column_gives_arrivals(tmp_path: Path) -> None:
    iso = write(tmp_path / "a.csv", "user,arrival_time,path",
                [f"u{i},2025-01-01T10:00:{i * 2:02d}Z,/x" for i in (3, 0, 1, 2)])
    arr = load_arrivals(iso, rate_scale=2.0)
    assert arr.t.tolist() == [0.0, 1.0, 2.0, 3.0]  # sorted, from the first, compressed x2
    assert not arr.has_tokens and (arr.prompt > 0).all() and (arr.output > 0).all()  # lengths drawn
    seconds = write(tmp_path / "s.csv", "timestamp,ContextTokens,GeneratedTokens", ["10.5,100,7", "12.5,200,0"])
    arr = load_arrivals(seconds)
    assert arr.has_tokens and arr.t.tolist() == [0.0, 2.0] and arr.output.tolist() == [7, 1]


@pytest.mark.parametrize(("header", "rows", "words"), [
    ("Time,Carbon Intensity", ["2020-01-01 00:00:00,200", "2020-01-01 00:30:00,210"], "carbon-intensity series"),
    ("datetime,load", [f"2020-01-01 {h:02d}:00:00,{h}" for h in range(12)], "evenly 60 minutes apart"),
    ("name,size", ["a,1", "b,2"], "no timestamp column"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens", ["yesterday,1,1", "2020-01-01,1,1"], "is not a time"),
    ("TIMESTAMP", ["2020-01-01 00:00:00"], "need at least 2"),
])
def test_files_that_are_not_arrivals_are_refused_with_the_fix(tmp_path: Path, header: str, rows: list[str],
                                                               words: str) -> None:
    with pytest.raises(TraceError, match="--trace") as err:
        load_arrivals(write(tmp_path / "x.csv", header, rows))
    assert words in str(err.value) and "timestamp column" in str(err.value)


@pytest.mark.parametrize("scale", [0.0, -2.0, float("nan"), float("inf")])
def test_rate_scale_must_be_positive(tmp_path: Path, scale: float) -> None:
    path = write(tmp_path / "a.csv", "timestamp", ["0", "1"])
    with pytest.raises(TraceError, match="--rate-scale must be a positive number"):
        load_arrivals(path, scale)


def test_cli_errors_are_one_line_naming_the_argument(tmp_path: Path) -> None:
    """Issue 12: `--rate-scale -2` and a carbon CSV as --trace: one line on stderr, exit code 2."""
    carbon = write(tmp_path / "gb_ci.csv", "Time,Carbon Intensity", ["2020-01-01 00:00:00,200",
                                                                    "2020-01-01 00:30:00,180"])
    for extra, words in ((["--rate-scale", "-2"], "--rate-scale"), ([], "--trace"),
                         (["--workload", "moe", "--model", "llama-7b"], "--model")):
        proc = subprocess.run([sys.executable, "-m", "gensched.cli", "simulate", "autoscale", "--trace", str(carbon),
                               *extra], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr


# -- the two-axis model and packing ---------------------------------------------------------------------

def test_two_axis_sharing() -> None:
    compute, memory = Cost(10.0, 0.0, 0.0), Cost(0.0, 10.0, 0.0)
    assert time_ms(compute, 0.5) == pytest.approx(20.0)  # compute scales with the SMs a share gets
    assert time_ms(memory, 0.5) == pytest.approx(10.0 / min(1.0, BW_REACH * 0.5))  # a few SMs reach the bandwidth
    assert time_ms(memory, 0.25) < time_ms(compute, 0.25)
    assert time_ms(memory, 0.5, stretch=2.0) == pytest.approx(2 * time_ms(memory, 0.5))  # contention
    assert time_ms(Cost(0.1, 0.1, 6.0), 0.25) == pytest.approx(6.0)  # host-bound: the share does not matter
    unet = next(o for o in H100_SD.operators if o.name == "denoiser")
    assert call_ms(unet, 8, 16384.0, 1.0) > call_ms(unet, 8, 4096.0, 1.0) > call_ms(unet, 1, 4096.0, 1.0)


def test_packing_counts_whole_gpus() -> None:
    c = GpuCounter(80.0)
    assert c.set("a", 4, 0.25) == 4 and c.whole == 1
    assert c.set("b", 1, 0.5) == 1 and c.whole == 2
    assert c.set("a", 5, 0.25) == 5 and c.whole == 2  # the fifth share fills the half-used GPU
    assert c.set("tp", 1, 2.0) == 1 and c.whole == 4  # a tensor-parallel replica takes whole GPUs
    c.set("a", 0, 0.25)
    assert c.whole == 3
    small = GpuCounter(80.0, gpus=2)
    assert small.set("a", 3, 1.0) == 2 and small.whole == 2  # a full cluster places what fits


# -- diffusion replay -------------------------------------------------------------------------------------

def requests(n: int, seconds: float, seed: int = 0) -> ImageRequests:
    rng = np.random.default_rng(seed)
    from gensched.sim.autoscale_workloads import Arrivals

    t = np.sort(rng.uniform(0, seconds, n))
    return diffusion_requests(Arrivals(t, np.ones(n, int), np.ones(n, int)), seed)


def test_diffusion_replay_serves_every_request_and_counts_gpus() -> None:
    req = requests(300, 60)
    ml = ad.model_level("shared", (1.0, 2, 1.0))
    po = ad.per_operator((0.5, 2, 1.0), (0.25, 1, 1.0), (0.25, 2, 1.0))  # ControlNet as its own deployment
    for s in (ml, po):
        r = replay(H100_SD, req, s)
        assert 0 <= r.slo_attainment <= 1 and r.dropped <= len(req)
        assert r.gpu_seconds >= r.gpu_seconds_fractional - 1e-6  # whole GPUs after packing >= the shares
        assert r.energy_kwh > r.gpu_seconds_fractional * H100_SD.idle_watts / 3.6e6 * 0.99
        assert r.goodput_rps == pytest.approx(r.slo_attainment * len(req) / req.t[-1])
        assert r.deployments and all(d.calls > 0 for d in r.deployments.values())
    r = replay(H100_SD, req, po)
    assert r.deployments["controlnet"].calls >= int((req.workflow == 2).sum())  # a call per ControlNet step
    assert replay(H100_SD, req, po).gpu_seconds == r.gpu_seconds  # deterministic


def test_static_keeps_its_replicas_and_more_load_needs_more_gpus() -> None:
    low, high = requests(100, 60), requests(600, 60, seed=1)
    ml = ad.model_level("shared", (1.0, 2, 1.0))
    fixed = Strategy("static", ml.deployments, per_operator=False, fixed=(3,))
    r = replay(H100_SD, low, fixed)
    assert r.decisions == 0 and r.peak_gpus == 3
    assert replay(H100_SD, high, ml).gpu_seconds > replay(H100_SD, low, ml).gpu_seconds


def test_a_full_cluster_caps_the_replicas() -> None:
    req = requests(800, 60)
    s = Strategy("pipeline", (DeploymentSpec("p", ("te", "unet", "cn", "vae"), 1.0, 1),), per_operator=False)
    capped = replay(H100_SD, req, s, gpus=2)
    assert capped.peak_gpus <= 2 and capped.slo_attainment < replay(H100_SD, req, s).slo_attainment


def test_measured_profile_keeps_its_ratios(tmp_path: Path) -> None:
    from dataclasses import replace

    from gensched.autoscale.profiles import ModelProfile

    ops = []
    for o in H100_SD.operators:  # a "CPU" profile: 1000x slower, the VAE relatively twice as slow
        k = 2000.0 if o.name == "vae-decoder" else 1000.0
        ops.append(replace(o, points=tuple((r[0], r[1], r[2] * k) for r in o.points)))
    cpu = replace(H100_SD, gpu="cpu", operators=tuple(ops), modelled=False)
    path = tmp_path / "cpu.json"
    cpu.save(path)
    got = ad.measured_as_gpu(ModelProfile.load(path), H100_SD)
    unet_g, unet_m = (next(o for o in p.operators if o.name == "denoiser") for p in (H100_SD, got))
    vae_g, vae_m = (next(o for o in p.operators if o.name == "vae-decoder") for p in (H100_SD, got))
    assert call_ms(unet_m, 1, 4096.0, 1.0) == pytest.approx(call_ms(unet_g, 1, 4096.0, 1.0), rel=1e-6)
    ratio = call_ms(vae_m, 1, 4096.0, 1.0) / call_ms(unet_m, 1, 4096.0, 1.0)
    assert ratio == pytest.approx(2 * vae_g.points[0][2] / unet_g.points[0][2], rel=1e-6)
    assert not got.modelled and "x" in got.source


# -- language models ------------------------------------------------------------------------------------

def llm_trace(rate: float, seconds: int, seed: int = 0) -> Trace:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, seconds, int(rate * seconds)))
    return Trace(t, rng.integers(200, 1500, len(t)), rng.integers(20, 300, len(t)), "synthetic")


def test_prefill_decode_keeps_prompts_out_of_the_token_iterations() -> None:
    tr, prof, slo = llm_trace(8, 120), profile("llama-7b", "h100"), SLO(2000, 100)
    tr = Trace(tr.arrival, tr.prompt * 4, tr.output, "long prompts")  # prompts dominate the work
    pd = replay_pd(tr, prof, slo, shares=(1.0, 1.0))
    mixed = replay_llm(tr, prof, slo, "model", (1.0,), shares=(1.0,))
    assert pd.tbt_p99_ms < 0.7 * mixed.tbt_p99_ms  # no prompt chunks in the decode pool's iterations
    assert pd.gpu_seconds >= pd.gpu_seconds_fractional - 1e-6 and pd.energy_kwh > 0
    assert len(pd.shares) == 2 and 0 < pd.slo_attainment <= 1


def test_moe_profile_follows_the_skew() -> None:
    prof = moe_profile("mixtral-8x7b", "h100", EXPERT_POPULARITY)
    experts = [o for o in prof.operators if o.type == "Experts"]
    assert len(experts) == 8 and {o.group for o in experts} == {"experts"}
    assert experts[0].step_per_seq_ms > 2 * experts[-1].step_per_seq_ms  # the hot expert computes more
    assert 85 < prof.whole().weights_gib < 89  # Mixtral-8x7B in bf16: more than one 80 GB GPU
    assert EXPERT_POPULARITY[0] / np.mean(EXPERT_POPULARITY) == pytest.approx(3.43, abs=0.01)
    with pytest.raises(ValueError, match="sum to 1"):
        moe_profile("mixtral-8x7b", "h100", (0.5,) * 8)


def test_cli_diffusion_interface(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, 40, 60))
    csv = write(tmp_path / "arrivals.csv", "timestamp", [f"{t:.3f}" for t in times])
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "gensched.cli", "simulate", "autoscale", "--workload", "diffusion",
                           "--trace", str(csv), "--json", str(out), "--tune-seconds", "40"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())
    assert set(got["strategies"]) == {"static", "model_level", "per_operator", "per_operator_same_loop"}
    for r in got["strategies"].values():
        assert {"gpu_seconds", "gpu_seconds_fractional", "energy_kwh", "slo_attainment", "goodput_rps"} <= set(r)
    assert got["strategies"]["per_operator_same_loop"]["config"]["loop_s"] == \
        got["strategies"]["model_level"]["config"]["loop_s"]  # the ablation: same loop period ...
    assert got["strategies"]["per_operator"]["config"]["per_operator"] is True
    assert "comparison" in got and "per-operator vs model level" in proc.stdout


def test_goodput_on_fixed_gpus_grows_with_the_gpus() -> None:
    req = requests(120, 60)
    tuned = {"model_level": ad.model_level("shared", (1.0, 1, 1.0)),
             "per_operator": ad.per_operator((0.5, 1, 1.0), (0.25, 1, 1.0), None)}
    say = lambda s: None  # noqa: E731
    one = ad.fixed_gpu_goodput(H100_SD, req, tuned, 1, say, steps=4)
    four = ad.fixed_gpu_goodput(H100_SD, req, tuned, 4, say, steps=4)
    for name in tuned:
        assert 0 <= one[name]["rate_scale"] <= four[name]["rate_scale"]
        assert four[name]["goodput_rps"] > 0 and four[name]["slo_attainment"] >= 0.99
