"""``gensched report``: from accounting and simulation JSON or a real Prometheus, checked in headless Chromium."""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from gensched.accounting import Prices, Sample, replay
from gensched.cli import main
from gensched.observe.report import ReportData, ReportError, from_json, job_row, run_report
from gensched.sim.timing_cli import run_timing
from tests.harness.prometheus import PrometheusServer
from tests.harness.tools import tool
from tests.integration.test_observability import drive

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = tool("chromium") or tool("chromium-browser")
    if binary is None:
        pytest.fail("chromium not installed: run `make tools` (scripts/install-tools.sh --prometheus installs it)")
    return binary


def accounting_json(path: Path) -> Path:
    """Report data of three jobs, each replayed through the accounting ledger."""
    prices = Prices(per_gpu_hour={"A100": 2.5, "L4": 0.8}, carbon_intensity=210.0)
    rows = []
    for ns, name, model, gpus, hours, per_min, unit, power in [
            ("ml", "synth-a", "NVIDIA-A100-SXM4-80GB", 2, 3, 50, "items", 500.0),
            ("ml", "synth-b", "NVIDIA-A100-SXM4-80GB", 1, 2, 20, "items", None),
            ("web", "chat", "NVIDIA-L4", 1, 4, 300, "requests", 60.0)]:
        samples = [Sample(T0 + timedelta(minutes=m), gpus=gpus, gpu_model=model, outputs=per_min * m, power_watts=power)
                   for m in range(0, hours * 60 + 1, 5)]
        rows.append(job_row(ns, name, replay(samples, prices), "EUR", unit))
    path.write_text(json.dumps(ReportData(sources=["accounting replay"], jobs=rows).to_dict()))
    return path


def timing_json(tmp: Path) -> Path:
    """The real ``simulate timing`` on a synthetic two-month carbon CSV."""
    rows, t = [], datetime(2021, 3, 1, tzinfo=UTC)
    while t < datetime(2021, 5, 1, tzinfo=UTC):
        rows.append(f"{t:%Y-%m-%d %H:%M:%S},{250 + 100 * math.cos(2 * math.pi * (t.hour - 19) / 24):.1f}")
        t += timedelta(minutes=30)
    csv = tmp / "synthetic_ci.csv"
    csv.write_text("Time,Carbon Intensity\n" + "\n".join(rows) + "\n")
    out = tmp / "timing.json"
    run_timing([csv], "nightly", "8h", 0.0, "perfect", False, 1, None, None, out, None, quiet=True)
    return out


def autoscale_json(tmp: Path) -> Path:
    """The shape ``simulate autoscale --json`` writes (its replay takes too long for a test)."""
    strategies = {k: {"gpu_seconds": g, "energy_kwh": e, "ttft_p99_ms": 300.0, "tbt_p99_ms": 40.0,
                      "slo_attainment": 0.99, "decisions": 10}
                  for k, g, e in (("static", 86400.0, 21.0), ("model", 60000.0, 15.5), ("operator", 41000.0, 11.2))}
    path = tmp / "autoscale.json"
    path.write_text(json.dumps({"trace": "AzureLLMInferenceTrace_conv.csv", "model": "llama-7b", "gpu": "H100",
                                "strategies": strategies}))
    return path


def packing_json(tmp: Path) -> Path:
    path = tmp / "packing.json"
    path.write_text(json.dumps({"pods": "openb_pod_list_default.csv", "policies": {
        name: {"allocated_gpu_ratio": {"median": r}} for name, r in
        (("gensched", 0.91), ("fgd", 0.90), ("bestfit", 0.84), ("packing", 0.80))}}))
    return path


def browser(chromium: str, page: Path, tmp: Path) -> tuple[str, np.ndarray]:
    """The DOM after load (each img annotated with its natural size) and a screenshot."""
    probe = tmp / "probe.html"
    probe.write_text(page.read_text().replace("</body>", """<script>
window.addEventListener('load', () => { for (const i of document.images) {
  i.setAttribute('data-natural', i.naturalWidth + 'x' + i.naturalHeight); } });
</script></body>"""))
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--virtual-time-budget=10000", f"--user-data-dir={tmp / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and "<html" in dom.stdout, dom.stderr[-2000:]
    shot = tmp / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1280,2600", page.as_uri()],
                   capture_output=True, text=True, timeout=120, check=True)
    import matplotlib.pyplot as plt

    return dom.stdout, plt.imread(shot)


def not_blank(img: np.ndarray) -> float:
    """Share of pixels that are not (near) white."""
    rgb = img[..., :3]
    return float((rgb.min(axis=-1) < 0.9).mean())


def test_report_from_accounting_and_simulations_renders_in_a_browser(chromium: str, tmp_path: Path) -> None:
    page, pic, data = tmp_path / "report.html", tmp_path / "report.png", tmp_path / "data.json"
    sources = [accounting_json(tmp_path / "acct.json"), timing_json(tmp_path), autoscale_json(tmp_path),
               packing_json(tmp_path)]
    args = ["report", "--out", str(page), "--png", str(pic), "--save-json", str(data), "--title", "Team GPUs"]
    assert main([*args, *[x for s in sources for x in ("--from-json", str(s))]]) == 0
    dom, shot = browser(chromium, page, tmp_path)
    for section in ("summary", "namespaces", "jobs", "per-output", "savings"):
        assert f'<section id="{section}">' in dom, section
    jobs_table = re.search(r'<table class="jobs">(.*?)</table>', dom, re.S)
    assert jobs_table is not None and jobs_table[1].count("<tr>") == 4  # header + 3 jobs
    assert "synth-a" in jobs_table[1] and "EUR" in jobs_table[1] and "requests" in jobs_table[1]
    savings = re.search(r'<table class="savings">(.*?)</table>', dom, re.S)
    assert savings is not None and "Deferral on synthetic_ci.csv" in savings[1]
    assert "per-operator autoscaling" in savings[1] and "GPUs allocated at saturation" in savings[1]
    sizes = re.findall(r'<img id="plot-([a-z-]+)"[^>]*data-natural="(\d+)x(\d+)"', dom)
    assert {k for k, _, _ in sizes} == {"namespaces", "jobs", "per-output", "savings"}
    assert all(int(w) > 300 and int(h) > 100 for _, w, h in sizes), sizes
    assert shot.shape[1] == 1280 and not_blank(shot) > 0.05  # text, tables and bars, not an empty page

    import matplotlib.pyplot as plt

    picture = plt.imread(pic)
    assert picture.shape[0] > 600 and not_blank(picture) > 0.05
    again = from_json(data)
    assert len(again.jobs) == 3 and len(again.comparisons) == 1 + 2 + 1
    deferral = next(c for c in again.comparisons if c.title.startswith("Deferral"))
    assert deferral.saving is not None and deferral.saving > 0  # deferring emitted less than running at once
    ml = next(r for r in again.namespaces() if r.namespace == "ml")
    assert ml.gpu_hours == pytest.approx(2 * 3 + 1 * 2) and ml.cost == pytest.approx(2.5 * 8)


def test_report_from_a_real_prometheus(prometheus_server: Callable[..., PrometheusServer], tmp_path: Path) -> None:
    end = (datetime.now(UTC) - timedelta(hours=4)).replace(second=0, microsecond=0)
    prom = prometheus_server(backfill=drive(end, 120))
    data = run_report(prom.url, "2h", [], tmp_path / "r.html", None, None, at=end)
    jobs = {(j.namespace, j.name): j for j in data.jobs}
    assert set(jobs) == {("ml", "synth"), ("web", "chat")}
    assert jobs[("ml", "synth")].gpu_hours == pytest.approx(4.0, rel=0.02)  # 2 GPUs for 2 hours
    assert jobs[("ml", "synth")].currency == "EUR" and jobs[("web", "chat")].output_unit == "requests"
    assert 0 < (jobs[("ml", "synth")].measured_share or 0) < 1  # power measured every other minute
    carbon = next(c for c in data.comparisons if c.title.startswith("Carbon saved"))
    assert carbon.values["saved"] > 0
    assert carbon.values["net"] == pytest.approx(carbon.values["saved"] - carbon.values["extra (ran dirtier)"])
    assert '<section id="jobs">' in (tmp_path / "r.html").read_text()


def test_report_errors_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"Prometheus at http://127\.0\.0\.1:9"):
        run_report("http://127.0.0.1:9", "7d", [], tmp_path / "r.html", None, None)
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ReportError, match=r"bad\.json: not JSON"):
        from_json(bad)
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(ReportError, match="not a report or simulation JSON"):
        from_json(other)
    with pytest.raises(ReportError, match="--range"):
        run_report(None, "a week", [other], tmp_path / "r.html", None, None)
    assert main(["report"]) == 2
