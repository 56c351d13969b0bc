"""The packing simulator on the real Alibaba trace (skipped when ../shared/data is absent)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from gensched.packing.fgd import TaskMix
from gensched.sim.alibaba import load_nodes, load_pods
from gensched.sim.packing_sim import inflate, run_arrivals
from tests.conftest import SHARED_DATA

TRACE = SHARED_DATA / "alibaba-gpu-v2023"
pytestmark = pytest.mark.skipif(not TRACE.is_dir(), reason=f"trace folder {TRACE} is absent (see ../shared/data)")


@pytest.fixture(scope="module")
def default_trace() -> tuple:
    nodes = load_nodes(TRACE / "openb_node_list_gpu_node.csv")
    pods = load_pods(TRACE / "openb_pod_list_default.csv", known_models={n.gpu_model for n in nodes})
    return nodes, [p.request for p in pods]


def test_trace_matches_its_readme(default_trace: tuple) -> None:
    nodes, reqs = default_trace
    assert len(nodes) == 1213 and sum(n.gpu_count for n in nodes) == 6212 and len(reqs) == 8152


def test_fgd_reproduces_the_published_result_and_gensched_beats_it(default_trace: tuple) -> None:
    """Tie-breaks move single seeds by tenths of a point, so the claim is on the median of three."""
    nodes, reqs = default_trace
    mix = TaskMix.from_requests(reqs)
    fgd_runs, gen_runs = [], []
    for seed in (42, 43, 44):
        workload = inflate(reqs, 6212 * 1000, 1.3, seed)
        assert sum(r.milli_total for r in workload) <= 1.3 * 6212 * 1000
        fgd_runs.append(run_arrivals(nodes, workload, "FGD", mix, seed))
        gen_runs.append(run_arrivals(nodes, workload, "Gensched", mix, seed))
    fgd = fgd_runs[0]
    # FGD paper, default trace, 130%: 95.40 (median of 10 seeds); the reference's seeded node-order ties
    assert abs(100 * statistics.median(r.allocated_gpu_ratio for r in fgd_runs) - 95.40) <= 0.3
    assert statistics.median(r.allocated_gpu_ratio for r in gen_runs) >= statistics.median(
        r.allocated_gpu_ratio for r in fgd_runs)
    assert len(fgd.allocation_curve) == 129 and fgd.allocation_curve[49] == pytest.approx(0.50, abs=0.01)
    assert fgd.failed_pods > 0 and fgd.decision_p99_ms < 50


def test_cli_writes_the_documented_json_and_plot(tmp_path: Path) -> None:
    out, png = tmp_path / "out.json", tmp_path / "curves.png"
    result = subprocess.run(
        [sys.executable, "-m", "gensched", "simulate", "packing",
         "--nodes", str(TRACE / "openb_node_list_gpu_node.csv"), "--pods", str(TRACE / "openb_pod_list_multigpu30.csv"),
         "--policy", "bestfit,random", "--seeds", "2",
         "--inflation", "1.0", "--json", str(out), "--plot", str(png)], capture_output=True, text=True, check=True)
    assert "BestFit" in result.stdout and "seed 43" in result.stderr
    data = json.loads(out.read_text())
    assert data["seeds"] == [42, 43] and set(data["policies"]) == {"BestFit", "Random"}
    block = data["policies"]["BestFit"]
    for key in ("allocated_gpu_ratio", "allocation_curve", "fragmentation_ratio", "failed_pods", "wall_s",
                "decision_p50_ms", "decision_p99_ms"):
        assert key in block
    assert len(block["allocated_gpu_ratio"]["per_seed"]) == 2 and png.stat().st_size > 10_000


def test_replay_mode_releases_departed_pods(tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    subprocess.run([sys.executable, "-m", "gensched", "simulate", "packing", "--nodes",
                    str(TRACE / "openb_node_list_gpu_node.csv"), "--pods", str(TRACE / "openb_pod_list_default.csv"),
                    "--policy", "gensched", "--seeds", "1", "--mode", "replay", "--json", str(out)],
                   capture_output=True, text=True, check=True)
    run = json.loads(out.read_text())["policies"]["Gensched"]
    assert 0.0 < run["allocated_gpu_ratio"]["median"] < 1.0 and run["failed_pods"]["median"] == 0


def test_cli_reports_bad_input_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "nodes.csv"
    bad.write_text("sn,cpu\nx,1\n")
    result = subprocess.run([sys.executable, "-m", "gensched", "simulate", "packing", "--nodes", str(bad),
                             "--pods", str(TRACE / "openb_pod_list_default.csv")], capture_output=True, text=True)
    assert result.returncode == 2 and "missing column(s) cpu_milli, memory_mib, gpu, model" in result.stderr
