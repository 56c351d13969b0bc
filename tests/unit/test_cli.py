"""The main job and CRD writer run offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    err = capsys.readouterr().err
    assert "not a gensched profile" in err and "--profile" in err and len(err.strip().splitlines()) == 1


# The CLI error contract (issue 12): one line on stderr naming the argument and the fix, exit status 2,
# no traceback.

def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's errors
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize(("argv", "names"), [
    (["simulate", "--nodes", "0"], ["--nodes", "1 to 10000"]),
    (["simulate", "--jobs", "-5"], ["--jobs", "1 to 100000"]),
    (["simulate", "--jobs", "many"], ["--jobs", "not a whole number"]),
    (["simulate", "--policy", "Foo"], ["--policy", "unknown packing strategy 'Foo'", "BestFit"]),
    (["simulate", "--seed", "-1"], ["--seed", "0 to"]),
    (["simulate", "packing", "--nodes", "n.csv", "--pods", "p.csv", "--inflation", "-1"], ["--inflation", "above 0"]),
    (["simulate", "packing", "--nodes", "n.csv", "--pods", "p.csv", "--inflation", "nan"], ["--inflation"]),
    (["simulate", "packing", "--nodes", "n.csv", "--pods", "p.csv", "--policy", "fgd,nope"], ["--policy", "'nope'"]),
    (["simulate", "packing", "--nodes", "missing-nodes.csv", "--pods", "p.csv"], ["missing-nodes.csv"]),
    (["simulate", "autoscale", "--trace", "t.csv", "--rate-scale", "-2"], ["--rate-scale", "above 0"]),
    (["simulate", "autoscale", "--trace", "t.csv", "--model", "gpt-9"], ["--model", "llama-7b"]),
    (["simulate", "timing", "--window", "99999999999d"], ["--window", "at most 7d"]),
    (["simulate", "timing", "--capacity", "1"], ["--capacity", "2 to"]),
    (["simulate", "timing", "--repetitions", "0"], ["--repetitions"]),
    (["simulate", "timing", "--signal", "nope.csv"], ["nope.csv", "not found"]),
    (["run", "--metrics-port", "99999"], ["--metrics-port", "0 to 65535"]),
    (["run", "--carbon-csv-dir", "/nonexistent-dir"], ["--carbon-csv-dir", "not a directory"]),
    (["explain"], ["FILE"]),
    (["nonsense"], ["invalid choice"]),
])
def test_every_error_is_one_line_naming_the_argument_exit_2(argv: list[str], names: list[str], capsys,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(argv, capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert all(n in err for n in names), err
    assert "Traceback" not in err and err.startswith("gensched")


def test_a_carbon_csv_given_as_an_autoscale_trace_says_what_it_expects(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    ci = tmp_path / "ci.csv"
    ci.write_text("Time,Carbon Intensity\n2020-01-01 00:00:00,100\n")
    rc, _, err = run_cli(["simulate", "autoscale", "--trace", str(ci)], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "--trace" in err and "TIMESTAMP" in err and "ContextTokens" in err


@pytest.mark.parametrize(("content", "message"), [
    ("", "no objects in the file"),
    ("---\n---\n", "no objects in the file"),
    ("- kind: GenerativeJob\n  spec: {}\n", "document 1 is a list, not an object"),
    ("just a string\n", "document 1 is a str, not an object"),
    ("kind: [unclosed\n", "not valid YAML (line"),
    ("a: " + "9" * 5000 + "\n", "not valid YAML"),
])
def test_explain_refuses_files_that_hold_no_manifest(tmp_path: Path, capsys, content: str, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    rc, out, err = run_cli(["explain", str(path)], capsys)
    assert rc == 2 and "valid" not in out, out  # an empty file is not "valid"
    assert len(err.strip().splitlines()) == 1 and message in err and "bad.yaml" in err, err
    rc, _, err = run_cli(["explain", str(tmp_path / "missing.yaml")], capsys)
    assert rc == 2 and "missing.yaml: no such file" in err


def test_explain_takes_many_files_and_applies_the_default_policy_to_all(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import yaml

    policy = {"apiVersion": "gensched.io/v1alpha1", "kind": "SchedulingPolicy", "metadata": {"name": "night"},
              "spec": {"default": True, "timing": {"mode": "OffPeak", "offPeakWindows": [
                  {"start": "22:00", "end": "06:00", "timezone": "UTC"}]}}}
    job = {"apiVersion": "gensched.io/v1alpha1", "kind": "GenerativeJob", "metadata": {"name": "j\x1b[2J" + "n" * 500},
           "spec": {"mode": "Batch", "model": {"name": "m", "parametersBillions": 7, "image": "i"},
                    "resources": {"gpus": 1}, "batch": {"input": "x", "deadline": "30h", "estimatedDuration": "1h"}}}
    (tmp_path / "a-policy.yaml").write_text(yaml.safe_dump(policy))
    (tmp_path / "b-job.yaml").write_text(yaml.safe_dump(job))
    rc, out, _ = run_cli(["explain", str(tmp_path / "a-policy.yaml"), str(tmp_path / "b-job.yaml")], capsys)
    assert rc == 0 and "# " in out and "b-job.yaml" in out
    assert "timing under night:" in out  # the policy of the other file applied
    assert "\x1b" not in out and "n" * 200 not in out  # hostile names are escaped and bounded
    (tmp_path / "c-list.yaml").write_text(yaml.safe_dump({"kind": "List", "items": [job]}))
    rc, out, _ = run_cli(["explain", str(tmp_path / "c-list.yaml")], capsys)
    assert rc == 0 and "GenerativeJob/" in out
    job["spec"]["batch"]["deadline"] = "999999999d"
    (tmp_path / "d-bad.yaml").write_text(yaml.safe_dump(job))
    rc, out, _ = run_cli(["explain", str(tmp_path / "d-bad.yaml")], capsys)
    assert rc == 1 and "spec.batch.deadline: batch.deadline '999999999d' is longer than the maximum 366d" in out


def test_run_exports_the_carbon_csv_dir_for_the_sources(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import gensched.controller.main as controller_main
    from gensched.timing.sources.csv_file import CSV_DIR_ENV

    seen: dict[str, str | None] = {}

    def fake_run_operator(**kw: object) -> int:  # the operator itself needs a cluster; only the hand-over is tested
        seen["dir"] = os.environ.get(CSV_DIR_ENV)
        return 0
    monkeypatch.delenv(CSV_DIR_ENV, raising=False)
    monkeypatch.setattr(controller_main, "run_operator", fake_run_operator)
    assert main(["run", "--carbon-csv-dir", str(tmp_path)]) == 0
    assert seen["dir"] == str(tmp_path.resolve())


def test_no_traceback_from_a_real_process_and_broken_pipes_are_quiet(tmp_path: Path) -> None:
    bad = subprocess.run([sys.executable, "-m", "gensched", "simulate", "--nodes", "0"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    piped = subprocess.run(f"{sys.executable} -m gensched simulate --jobs 20 --nodes 2 | head -1", shell=True,
                           capture_output=True, text=True, timeout=120)
    assert piped.stdout.startswith("gensched simulate") and "Traceback" not in piped.stderr


def test_make_demo_installs_only_the_core_and_make_test_the_rest() -> None:
    from tests.harness.tools import ROOT

    def recipe(target: str) -> str:
        return subprocess.run(["make", "-n", "-B", "-C", str(ROOT), target, "VENV=/tmp/gensched-dry-venv"],
                              capture_output=True, text=True, check=True, timeout=60).stdout
    demo, test = recipe("demo"), recipe("test")
    demo_installs = [line for line in demo.splitlines() if "pip install" in line and "-e" in line]
    assert demo_installs and not any("test" in line or "workloads" in line for line in demo_installs), demo
    assert "gensched simulate" in demo and "install-tools" not in demo
    assert any(".[test,workloads]" in line for line in test.splitlines()), test
    assert "install-tools.sh" in test and "pytest" in test
