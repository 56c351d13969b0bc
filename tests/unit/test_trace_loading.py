"""Trace CSVs: bad rows are reported with file, line and reason; bad files fail with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from gensched.sim.alibaba import LoadReport, load_nodes, load_pods


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_bad_rows_are_counted_with_reasons(tmp_path: Path) -> None:
    nodes = write(tmp_path, "n.csv", "sn,cpu_milli,memory_mib,gpu,model\nn1,64000,262144,2,T4\n"
                  "n1,64000,262144,2,T4\nn2,abc,1,2,T4\nn3,64000,262144,9,T4\nn4,32000,1024,0,\n")
    report = LoadReport()
    got = load_nodes(nodes, report)
    assert [n.name for n in got] == ["n1"]
    assert any("n.csv:3: node n1 appears twice" in r for r in report.rejected)
    assert any("n.csv:4:" in r for r in report.rejected) and any("n.csv:5:" in r and "0..8" in r
                                                                 for r in report.rejected)
    pods = write(tmp_path, "p.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"
                 "ok,1000,1024,1,500,\nmulti,1000,1024,2,500,\nbig,1000,1024,9,1000,\nzero,1000,1024,1,0,\n"
                 "spec,1000,1024,1,1000,H100\nfine,1000,1024,0,0,\n")
    report = LoadReport()
    loaded = load_pods(pods, report, known_models={"T4"})
    assert [p.request.key for p in loaded] == ["ok", "fine"]
    reasons = "\n".join(report.rejected)
    assert "p.csv:3: multi-GPU task" in reasons and "p.csv:4: num_gpu 9" in reasons
    assert "p.csv:5: gpu_milli 0" in reasons and "p.csv:6: gpu_spec H100 names no GPU model" in reasons


def test_missing_columns_and_empty_cluster_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing column\\(s\\) gpu, model"):
        load_nodes(write(tmp_path, "n.csv", "sn,cpu_milli,memory_mib\nx,1,1\n"))
    with pytest.raises(ValueError, match="no usable GPU nodes"):
        load_nodes(write(tmp_path, "m.csv", "sn,cpu_milli,memory_mib,gpu,model\nx,1000,1000,0,\n"))


def test_node_csv_may_mark_mig_partitioned_nodes(tmp_path: Path) -> None:
    from gensched.packing.fgd import TaskMix
    from gensched.sim.packing_sim import run_arrivals

    nodes = write(tmp_path, "n.csv", "sn,cpu_milli,memory_mib,gpu,model,mig_profile\n"
                  "plain,64000,262144,1,A100,\nmig,64000,262144,1,A100,1g.10gb\nbad,64000,262144,1,A100,9g.9gb\n")
    report = LoadReport()
    got = load_nodes(nodes, report)
    assert [(n.name, n.mig_profile, n.gpu_memory_gib) for n in got] == [("plain", "", 80.0), ("mig", "1g.10gb", 10.0)]
    assert any("n.csv:4:" in r and "g in 1..4" in r for r in report.rejected)
    pods = [p.request for p in load_pods(write(tmp_path, "p.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n"
                                               + "".join(f"s{i},1000,1024,1,100\n" for i in range(20))))]
    result = run_arrivals(got, pods, "fgd", TaskMix.from_requests(pods), seed=0)
    # 10 shares of 100 fill the plain GPU, 7 more take the MIG instances (142 each), 3 fail
    assert result.failed_pods == 3
    assert result.allocated_gpu_ratio == pytest.approx((1000 + 7 * 142) / 2000)
