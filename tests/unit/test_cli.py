"""The main job and CRD writer run offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gensched.cli import main


def test_simulate_runs_on_built_in_defaults() -> None:
    out = subprocess.run([sys.executable, "-m", "gensched", "simulate"], capture_output=True, text=True, check=True)
    assert "GPU packing" in out.stdout and "BestFit" in out.stdout and "FirstFit" in out.stdout
    rows = [line.split() for line in out.stdout.splitlines()
            if line.strip().startswith(("FirstFit", "BestFit", "FGD", "Gensched"))]
    assert len(rows) == 4
    for row in rows:
        placed, failed = int(row[1]), int(row[2])
        assert placed + failed == 200 and placed > 0
    carbon = [line for line in out.stdout.splitlines() if "less CO2" in line]
    assert len(carbon) == 3 and int(carbon[0].split(": ")[-1].split("%")[0]) > 20  # deferring saves
    serving = {line.split()[0]: line.split() for line in out.stdout.splitlines()
               if line.strip().startswith(("static ", "model ", "operator "))}
    assert set(serving) == {"static", "model", "operator"}
    assert float(serving["static"][2]) >= 0.99 and int(serving["static"][3]) == 0  # static never rescales


def test_crds_command_writes_files(tmp_path: Path) -> None:
    assert main(["crds", "--out", str(tmp_path / "a"), "--chart", ""]) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "gensched.io_generativejobs.yaml", "gensched.io_schedulingpolicies.yaml"]


def test_explain_says_whether_a_serve_job_fits_and_how_it_splits(tmp_path: Path) -> None:
    import yaml

    from gensched.sim.explain import explain_documents
    from tests.harness.tools import ROOT

    doc = yaml.safe_load((ROOT / "workloads/examples/serve-llama-operators.yaml").read_text())
    lines, invalid = explain_documents([doc])
    text = "\n".join(lines)
    assert invalid == 0 and "on NVIDIA-H100-80GB-HBM3 nodes: servable" in text
    assert "middle (layers 8-23, 0.5 GPU/replica, 1-8 replicas)" in text
    doc["spec"]["serve"]["slo"]["tbtMs"] = 0.1
    text = "\n".join(explain_documents([doc])[0])
    assert "SLOUnreachable: serve.slo.tbtMs 0.1 ms" in text
