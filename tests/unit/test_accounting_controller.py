"""The controller's accounting helpers and the batch entrypoint's outputs channel (the operator side is in
tests/integration/test_accounting_operator.py)."""

from __future__ import annotations

import json
import re
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gensched.accounting import Ledger, Prices, Sample, advance
from gensched.controller.accounting_step import Readings, _first_reading, _pod_regex, monotonic
from tests.harness.ports import free_port


def test_pod_regex_matches_exactly_the_pods_the_job_controller_names() -> None:
    rx = re.compile(_pod_regex("synth"))
    assert rx.fullmatch("synth-x7k2p")
    assert not rx.fullmatch("synth-b-x7k2p") and not rx.fullmatch("synthx-x7k2p") and not rx.fullmatch("synth-x7k2")
    long = "a" * 63  # generateName is cut to 58 characters before the 5 random ones
    assert re.fullmatch(_pod_regex(long), "a" * 58 + "q1w2e")
    assert re.fullmatch(_pod_regex("dots.and+plus"), "dots.and+plus-abcde")  # escaped, not a pattern
    assert not re.fullmatch(_pod_regex("dots.and+plus"), "dotsXandplus-abcde")


def test_a_summed_request_counter_never_goes_back_when_a_replica_leaves() -> None:
    counter, out = monotonic({}, 300.0)
    assert out == 300
    counter, out = monotonic(counter, 200.0)  # a replica with 100 requests left the sum
    assert out == 300 and counter == {"last": 200.0, "offset": 100.0}
    counter, out = monotonic(counter, 260.0)
    assert out == 360
    counter, out = monotonic(json.loads(json.dumps(counter)), 260.0)  # as stored in status
    assert out == 360


def test_an_interval_before_the_first_dcgm_reading_is_charged_at_that_reading() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    prices = Prices()
    led = advance(Ledger(), Sample(t0, gpus=1, gpu_model="NVIDIA-A100-SXM4-80GB"), prices)
    same = _first_reading(led, Readings(power_watts=250.0), gpus=1)
    out = advance(same, Sample(t0 + timedelta(seconds=60), gpus=1, power_watts=250.0), prices)
    assert out.total.measured_joules == 250.0 * 60 and out.total.modelled_joules == 0
    # other GPUs than the reading's, or no reading: left to the model
    assert _first_reading(led, Readings(power_watts=250.0), gpus=2) is led
    assert _first_reading(led, Readings(), gpus=1) is led


def test_the_batch_entrypoint_serves_items_done_counting_its_checkpoint(tmp_path: Path) -> None:
    from gensched_workloads.batch import main

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"prompt {i}"}) + "\n" for i in range(5)))
    out = tmp_path / "out.jsonl"

    def scrape(port: int) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return float(re.search(r"^gensched_workload_outputs_total (\S+)$", text, re.M)[1])  # type: ignore[index]

    first = free_port()
    assert main(["--input", str(src), "--output", str(out), "--max-tokens", "2", "--stop-after", "2",
                 "--metrics-port", str(first)]) != 0
    assert scrape(first) == 2
    second = free_port()
    assert main(["--input", str(src), "--output", str(out), "--max-tokens", "2", "--metrics-port", str(second)]) == 0
    assert scrape(second) == 5  # the resumed run continues the count from its checkpoint


def test_the_next_sample_is_due_when_the_budget_crosses_warn_at_or_its_limit() -> None:
    from gensched.api import GenerativeJobSpec, SchedulingPolicySpec
    from gensched.controller.accounting_step import _budget_horizon_s

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    spec = GenerativeJobSpec.model_validate({
        "mode": "Batch", "model": {"name": "m", "parametersBillions": 7, "image": "w:1"}, "resources": {"gpus": 2},
        "batch": {"input": "s3://in"}, "budget": {"maxGpuHours": 1.0, "maxCost": 3.0, "warnAt": 0.5}})
    policy = SchedulingPolicySpec.model_validate({"accounting": {"pricing": [{"gpuModel": "A100",
                                                                              "pricePerGpuHour": 2.0}]}})
    led = advance(Ledger(), Sample(t0, gpus=2, gpu_model="NVIDIA-A100-SXM4-80GB"), Prices())
    # at 2 GPUs: warnAt of maxGpuHours (0.5 GPU-h) comes after 0.25 h, warnAt of maxCost (1.5 at 4.0/h) after 0.375 h
    assert _budget_horizon_s(spec, led, policy) == pytest.approx(0.25 * 3600, abs=0.01)
    later = advance(led, Sample(t0 + timedelta(hours=0.3), gpus=2, gpu_model="NVIDIA-A100-SXM4-80GB"), Prices())
    # past warnAt of GPU-hours (0.6 GPU-h used; this ledger was priced at zero): next is that limit, 0.2 h away
    assert _budget_horizon_s(spec, later, policy) == pytest.approx(0.2 * 3600, abs=0.01)
    assert _budget_horizon_s(spec.model_copy(update={"budget": None}), led, policy) is None
