"""The batch synthesis entrypoint resumes exactly where it stopped (checkpoint per item)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gensched_workloads.batch import INTERRUPTED, main


def prompts(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"prompt number {i}"}) + "\n" for i in range(n)))
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_interrupted_run_resumes_without_duplicates(tmp_path: Path) -> None:
    src = prompts(tmp_path / "in.jsonl", 7)
    whole, parts = tmp_path / "whole.jsonl", tmp_path / "parts.jsonl"
    assert main(["--input", str(src), "--output", str(whole), "--max-tokens", "6"]) == 0
    assert main(["--input", str(src), "--output", str(parts), "--max-tokens", "6", "--stop-after", "3"]) == INTERRUPTED
    assert len(lines(parts)) == 3
    with parts.open("a") as fh:  # a line half-written when the pod was killed
        fh.write('{"id": "p3", "prompt": "prom')
    assert main(["--input", str(src), "--output", str(parts), "--max-tokens", "6"]) == 0
    assert lines(parts) == lines(whole)
    assert main(["--input", str(src), "--output", str(parts), "--max-tokens", "6"]) == 0  # nothing left: no-op
    assert lines(parts) == lines(whole)


@pytest.mark.timeout(900)  # a busy machine loads torch slowly; the assertions are invariants, not speed
def test_sigterm_from_a_suspend_checkpoints_and_exits_non_zero(tmp_path: Path) -> None:
    src = prompts(tmp_path / "in.jsonl", 200)
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "gensched_workloads.batch", "--input", str(src), "--output", str(out),
           "--max-tokens", "24"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    ckpt = Path(f"{out}.ckpt")
    deadline = time.monotonic() + 600
    while not ckpt.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == INTERRUPTED and "interrupted after" in err
    done = json.loads(ckpt.read_text())["done"]
    assert 0 < done < 200 and len(lines(out)) == done
    assert subprocess.run(cmd, capture_output=True, timeout=800).returncode == 0
    got = lines(out)
    assert [g["id"] for g in got] == [f"p{i}" for i in range(200)]
