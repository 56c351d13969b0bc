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


def test_explain_previews_profile_sizing(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from gensched.cli import main
    from tests.harness.tools import ROOT

    def op(name: str, base: float, per_seq: float) -> dict:
        return {"name": name, "weights_gib": 1.0, "kv_gib_per_token": 0.0, "step_base_ms": base,
                "step_per_seq_ms": per_seq, "step_per_kctx_ms": 0.0, "prefill_base_ms": 1.0,
                "prefill_per_token_ms": 0.01}
    prof = {"model": "toy", "gpu": "h100", "gpu_memory_gib": 80.0, "gpu_watts": 700.0, "idle_watts": 100.0,
            "operators": [op("embed-early", 0.5, 0.01), op("middle", 1.0, 0.1), op("late-head", 0.5, 0.01)]}
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(prof))
    example = str(ROOT / "workloads/examples/serve-llama-operators.yaml")
    assert main(["explain", example, "--profile", str(path)]) == 0
    out = capsys.readouterr().out
    # tbtMs 50 -> 40 ms, split by batch-1 steps on their shares (2.04 / 2.2 / 2.04 ms): middle gets 14.0 ms;
    # on 0.5 GPU its step is 2 + 0.2 b ms -> 60 sequences
    assert "sizing from the profile (1024 context tokens)" in out
    assert "middle 60 in flight per replica within 14.0 ms" in out
    prof["operators"].pop()  # a profile missing an operator names it
    path.write_text(json.dumps(prof))
    assert main(["explain", example, "--profile", str(path)]) == 0
    assert "no entry for operator(s) ['late-head']" in capsys.readouterr().out
    path.write_text("{")
    assert main(["explain", example, "--profile", str(path)]) == 2
    assert "not a gensched profile" in capsys.readouterr().out
