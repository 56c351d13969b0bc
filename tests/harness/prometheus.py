"""A real Prometheus server (Debian package) on 127.0.0.1, started by the tests themselves.

``backfill`` writes OpenMetrics samples into TSDB blocks with ``promtool tsdb
create-blocks-from openmetrics`` before start, so history exists at once.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import requests

from tests.harness.ports import free_port


class PrometheusServer:
    def __init__(self, workdir: Path, scrape_targets: list[str] | None = None, scrape_interval: str = "1s") -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        jobs = ""
        if scrape_targets:
            targets = ", ".join(f"'{t}'" for t in scrape_targets)
            jobs = f"scrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: [{targets}]\n"
        (workdir / "prometheus.yml").write_text(
            f"global:\n  scrape_interval: {scrape_interval}\n  evaluation_interval: {scrape_interval}\n{jobs}")
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def binary() -> str | None:
        return shutil.which("prometheus")

    def backfill(self, openmetrics: str) -> None:
        src = self.workdir / "backfill.om"
        src.write_text(openmetrics if openmetrics.endswith("# EOF\n") else openmetrics + "# EOF\n")
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(src), str(self.data)],
                       check=True, capture_output=True, timeout=120)

    def start(self) -> PrometheusServer:
        log = (self.workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.data}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=90d", "--web.enable-lifecycle"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(self.workdir / 'prometheus.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError("prometheus did not become ready within 60 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
