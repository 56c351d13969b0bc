"""CarbonAware timing through the real operator: a CSV provider, the API emulator, kubectl, and the
operator's clock driven by the test (GENSCHED_CLOCK_FILE): the test steps through one night, so nothing
depends on how fast the machine decides."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.conftest import Cluster, OperatorProcess, wait_for
from tests.harness.tools import Kubectl

pytestmark = pytest.mark.integration
START = datetime(2026, 3, 3, 0, 30, tzinfo=UTC)  # the operator's clock stands here until the test moves it
CHEAP = {(2, 0), (2, 30), (4, 0), (4, 30)}  # 100 gCO2/kWh at 02:00-03:00 and 04:00-05:00, else 400


def intensity(t: datetime) -> float:
    return 100.0 if (t.hour, t.minute) in CHEAP else 400.0


@pytest.fixture
def carbon_csv(tmp_path: Path) -> Path:
    path = tmp_path / "ci.csv"
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    rows = [t0 + timedelta(minutes=30 * i) for i in range(48 * 5)]
    path.write_text("Time,Carbon Intensity\n" + "".join(f"{t:%Y-%m-%d %H:%M:%S},{intensity(t)}\n" for t in rows))
    return path


class Clock:
    """The operator's clock, stepped by the test."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.set(START)

    def set(self, t: datetime) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(t.isoformat().replace("+00:00", "Z") + " 0\n")
        tmp.replace(self.path)  # atomic: the operator never reads half a file


@pytest.fixture
def clock(tmp_path: Path) -> Clock:
    return Clock(tmp_path / "clock")


@pytest.fixture
def clocked_operator(cluster: Cluster, tmp_path: Path, clock: Clock) -> Iterator[OperatorProcess]:
    op = OperatorProcess(tmp_path / "kubeconfig", tmp_path / "operator.log",
                         env={"GENSCHED_CLOCK_FILE": str(clock.path), "GENSCHED_NAMESPACE": "default",
                              "GENSCHED_CARBON_CSV_DIR": str(tmp_path)})
    op.start()
    yield op
    op.stop()
    assert "Traceback" not in op.logs(), op.logs()[-4000:]


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, 3, hour, minute, tzinfo=UTC)


def policy(name: str, csv: Path | str, default: bool = True) -> dict:
    return {"apiVersion": "gensched.io/v1alpha1", "kind": "SchedulingPolicy", "metadata": {"name": name},
            "spec": {"default": default, "packing": {"strategy": "BestFit"},
                     "timing": {"mode": "CarbonAware", "maxDeferral": "24h", "safetyMargin": "30m",
                                "smoothingSlots": 1, "carbon": {"provider": "CSV", "csvPath": str(csv)}}}}


def job(name: str, hours: float, deadline: datetime, interruptible: bool = False, gpus: float = 1,
        policy_ref: str | None = None) -> dict:
    spec = {"mode": "Batch", "model": {"name": "llama-2-7b", "parametersBillions": 7, "precision": "bf16",
                                       "image": "ghcr.io/gensched/workloads:0.1.0"},
            "resources": {"gpus": gpus, "cpu": "1", "memory": "1Gi"},
            "batch": {"input": "s3://in", "deadline": deadline.isoformat().replace("+00:00", "Z"),
                      "estimatedDuration": f"{int(hours * 60)}m", "interruptible": interruptible}}
    if policy_ref:
        spec["policyRef"] = policy_ref
    return {"apiVersion": "gensched.io/v1alpha1", "kind": "GenerativeJob", "metadata": {"name": name}, "spec": spec}


def reasons(cluster: Cluster, name: str) -> list[str]:
    return [e["reason"] for e in cluster.events_for(name)]


def test_deferred_to_the_cleanest_hours_with_expected_and_actual_savings(
        cluster: Cluster, clocked_operator: OperatorProcess, crds: Kubectl, carbon_csv: Path, clock: Clock) -> None:
    cluster.add_node("gpu-a", gpus=1)
    cluster.standin.hold.update({"night-a", "night-b"})
    crds("apply", "-f", "-", stdin=yaml.safe_dump(policy("carbon", carbon_csv)))
    deadline = START + timedelta(hours=7)
    crds("apply", "-f", "-", stdin=yaml.safe_dump_all([job("night-a", 1, deadline), job("night-b", 1, deadline)]))
    cluster.wait_phase("night-a", "Deferred", timeout=20)
    cluster.wait_phase("night-b", "Deferred", timeout=20)

    def plans() -> dict[str, str]:
        return {n: ((cluster.gj(n) or {}).get("status") or {}).get("plannedStart", "") for n in ("night-a", "night-b")}
    # One GPU: the two may not share the clean hour at 02:00; the one decided later takes 04:00.
    wait_for(lambda: sorted(plans().values()) == ["2026-03-03T02:00:00Z", "2026-03-03T04:00:00Z"], timeout=20,
             what="one job at 02:00 and the other at 04:00")
    first, second = sorted(plans(), key=lambda n: plans()[n])
    st = cluster.gj(first)["status"]
    assert st["phase"] == "Deferred" and cluster.gj(second)["status"]["phase"] == "Deferred"
    assert st["carbon"]["expectedSavingPct"] == pytest.approx(75.0)
    assert st["carbon"]["baselineIntensity"] == 400 and st["carbon"]["expectedIntensity"] == 100
    assert st["carbon"]["powerKw"] == pytest.approx(1 * 400 * 0.7 / 1000)  # A100-SXM default node: 400 W x 0.7
    assert {c["type"]: c["status"] for c in st["conditions"]}["SignalAvailable"] == "True"
    messages = wait_for(lambda: [e["message"] for e in cluster.events_for(first) if e["reason"] == "Deferred"],
                        what="Deferred event")
    assert messages[0].startswith("deferred until 2026-03-03T02:00:00Z: expected saving ")
    assert messages[0].endswith("gCO2 (75.0%)")
    # Nothing runs before its slot ...
    clock.set(at(1, 30))
    time.sleep(2)
    assert cluster.get("batch", "jobs", "default", first)["spec"]["suspend"] is True
    assert cluster.phase(first) == "Deferred"
    # ... then each runs in its clean hour and reports what it used.
    clock.set(at(2))
    cluster.wait_phase(first, "Running", timeout=60)
    clock.set(at(2, 45))
    cluster.standin.hold.discard(first)
    done = cluster.wait_phase(first, "Succeeded", timeout=60)["status"]
    assert done["releasedAt"] == "2026-03-03T02:00:00Z"
    c = done["carbon"]
    assert c["energyKWh"] == pytest.approx(0.28 * 0.75, rel=0.01)  # 0.28 kW for 45 minutes
    assert c["actualGCO2"] == pytest.approx(c["energyKWh"] * 100, rel=0.01)
    assert c["actualSavingGCO2"] == pytest.approx(c["energyKWh"] * 300, rel=0.01)
    assert cluster.phase(second) == "Deferred"
    clock.set(at(4))
    cluster.wait_phase(second, "Running", timeout=60)
    clock.set(at(4, 30))
    cluster.standin.hold.discard(second)
    done_b = cluster.wait_phase(second, "Succeeded", timeout=60)["status"]
    assert done_b["releasedAt"] == "2026-03-03T04:00:00Z"
    text = clocked_operator.metrics()
    assert "gensched_deferred_jobs_total 2.0" in text
    saved = float(next(line.split()[1] for line in text.splitlines()
                       if line.startswith("gensched_carbon_saved_grams_total")))
    assert saved == pytest.approx(c["actualSavingGCO2"] + done_b["carbon"]["actualSavingGCO2"], rel=0.01)


def test_no_slack_run_now_annotation_and_a_broken_signal(
        cluster: Cluster, clocked_operator: OperatorProcess, crds: Kubectl, kubectl: Kubectl,
        carbon_csv: Path, clock: Clock) -> None:
    cluster.add_node("gpu-a", gpus=4)
    crds("apply", "-f", "-", stdin=yaml.safe_dump_all([policy("carbon", carbon_csv),
                                                        policy("broken", "/nonexistent.csv", default=False)]))
    for name in ("urgent", "forced"):
        cluster.standin.hold.add(name)
    crds("apply", "-f", "-", stdin=yaml.safe_dump_all([
        job("urgent", 2, START + timedelta(hours=2)),  # cannot wait: 2 h of work, 2 h to the deadline
        job("forced", 1, START + timedelta(hours=20)),
        job("blind", 1, START + timedelta(hours=20), policy_ref="broken"),
    ]))
    urgent = cluster.wait_phase("urgent", "Running", timeout=20)
    assert {c["type"]: c["reason"] for c in urgent["status"]["conditions"]}["DeadlineAtRisk"] == "Timing"
    wait_for(lambda: "Timing" in reasons(cluster, "urgent"), what="Timing warning event")
    cluster.wait_phase("forced", "Deferred", timeout=20)
    kubectl("annotate", "gj", "forced", "gensched.io/run-now=true")
    cluster.wait_phase("forced", "Running", timeout=20)
    wait_for(lambda: "RunNow" in reasons(cluster, "forced"), what="RunNow event")
    blind = cluster.wait_phase("blind", "Succeeded", timeout=30)  # no signal, no windows: runs now
    cond = {c["type"]: c for c in blind["status"]["conditions"]}["SignalAvailable"]
    assert cond["status"] == "False" and "csvPath" in cond["message"]
    wait_for(lambda: "SignalDegraded" in reasons(cluster, "blind"), what="SignalDegraded event")


def test_interruptible_job_pauses_between_its_slots(
        cluster: Cluster, clocked_operator: OperatorProcess, crds: Kubectl, carbon_csv: Path, clock: Clock) -> None:
    cluster.add_node("gpu-a", gpus=1)
    cluster.standin.hold.add("pieces")
    crds("apply", "-f", "-", stdin=yaml.safe_dump(policy("carbon", carbon_csv)))
    crds("apply", "-f", "-", stdin=yaml.safe_dump(job("pieces", 2, START + timedelta(hours=7), interruptible=True)))
    st = cluster.wait_phase("pieces", "Deferred", timeout=20)["status"]
    assert [(s["start"], s["end"]) for s in st["plannedSlots"]] == [
        ("2026-03-03T02:00:00Z", "2026-03-03T03:00:00Z"), ("2026-03-03T04:00:00Z", "2026-03-03T05:00:00Z")]
    # Started now (00:30) it would run 00:30-02:30 at 400, 400, 400, 100 on average 325 gCO2/kWh.
    assert st["carbon"]["baselineIntensity"] == 325 and st["carbon"]["expectedSavingPct"] == pytest.approx(69.23)
    clock.set(at(2))
    cluster.wait_phase("pieces", "Running", timeout=60)
    clock.set(at(3, 10))
    wait_for(lambda: cluster.get("batch", "jobs", "default", "pieces")["spec"]["suspend"] is True, timeout=60,
             what="suspended after the first slot")
    wait_for(lambda: "Suspended" in reasons(cluster, "pieces"), what="Suspended event")
    # Restart the operator in the gap: the plan lives in status, so the new process resumes on time.
    op = clocked_operator
    op.stop(kill=True)
    op.start()
    time.sleep(2)
    assert cluster.get("batch", "jobs", "default", "pieces")["spec"]["suspend"] is True  # still in the gap
    clock.set(at(4))
    wait_for(lambda: cluster.get("batch", "jobs", "default", "pieces")["spec"]["suspend"] is False, timeout=60,
             what="resumed in the second slot")
    wait_for(lambda: "Resumed" in reasons(cluster, "pieces"), what="Resumed event")
    clock.set(at(4, 50))
    cluster.standin.hold.discard("pieces")
    done = cluster.wait_phase("pieces", "Succeeded", timeout=60)["status"]
    assert done["carbon"]["actualGCO2"] == pytest.approx(done["carbon"]["energyKWh"] * 100, rel=0.01)


