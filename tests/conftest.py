"""Shared fixtures: the API emulator, kubectl against it, the cluster stand-in, the operator process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.cluster import ClusterStandIn, gpu_node
from tests.harness.ports import free_port
from tests.harness.prometheus import PrometheusServer
from tests.harness.server import EmulatorServer
from tests.harness.tools import ROOT, Kubectl, tool

SHARED_DATA = Path(os.environ.get("GENSCHED_SHARED_DATA", ROOT.parent / "shared" / "data"))




def wait_for(predicate: Callable[[], object], timeout: float = 30, every: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[EmulatorServer]:
    server = EmulatorServer().start()
    server.write_kubeconfig(tmp_path / "kubeconfig")
    yield server
    server.stop()


@pytest.fixture
def kubectl(api: EmulatorServer, tmp_path: Path) -> Kubectl:
    binary = tool("kubectl")
    if binary is None:
        pytest.fail("kubectl not installed: run `make tools` (scripts/install-tools.sh)")
    return Kubectl(binary, tmp_path / "kubeconfig", tmp_path / "kubectl-cache")


@pytest.fixture
def crds(kubectl: Kubectl) -> Kubectl:
    kubectl("apply", "-f", str(ROOT / "crds"))
    return kubectl


class Cluster:
    """The emulator plus stand-in controllers, with helpers to read objects."""

    def __init__(self, api: EmulatorServer, standin: ClusterStandIn) -> None:
        self.api, self.standin = api, standin

    def add_node(self, name: str, **kw: object) -> None:
        emu = self.api.emulator
        assert emu is not None
        self.api.call(emu.create(emu.kinds[("", "nodes")], None, gpu_node(name, **kw)))  # type: ignore[arg-type]

    def get(self, group: str, plural: str, ns: str | None, name: str) -> dict | None:
        assert self.api.emulator is not None
        return self.api.emulator.get(group, plural, ns, name)

    def list(self, group: str, plural: str, ns: str | None = None) -> list[dict]:
        assert self.api.emulator is not None
        return self.api.emulator.list(group, plural, ns)

    def gj(self, name: str, ns: str = "default") -> dict | None:
        return self.get("gensched.io", "generativejobs", ns, name)

    def phase(self, name: str, ns: str = "default") -> str | None:
        obj = self.gj(name, ns)
        return ((obj or {}).get("status") or {}).get("phase")

    def wait_phase(self, name: str, phase: str, timeout: float = 40) -> dict:
        wait_for(lambda: self.phase(name) == phase, timeout, what=f"{name} to reach {phase} (now {self.phase(name)})")
        gj = self.gj(name)
        assert gj is not None
        return gj

    def events_for(self, name: str) -> list[dict]:
        return [e for e in self.list("", "events") if (e.get("involvedObject") or {}).get("name") == name]


@pytest.fixture
def cluster(api: EmulatorServer, crds: Kubectl) -> Iterator[Cluster]:
    assert api.emulator is not None
    standin = ClusterStandIn(api.emulator)
    api.call(standin.start())
    yield Cluster(api, standin)
    api.call(standin.stop())


class OperatorProcess:
    """``gensched run`` as a subprocess (kopf's real loop), restartable."""

    def __init__(self, kubeconfig: Path, log: Path, webhook: bool = False, namespaces: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.kubeconfig, self.log, self.webhook, self.namespaces = kubeconfig, log, webhook, namespaces
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.metrics_port = 0

    def start(self) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), GENSCHED_RETRY_SECONDS="1",
                   PYTHONUNBUFFERED="1", **self.env)
        cmd = [sys.executable, "-m", "gensched", "run", "--standalone", "--metrics-port", str(self.metrics_port),
               "--liveness", f"http://127.0.0.1:{self.port}/healthz"]
        for ns in self.namespaces:
            cmd += ["--namespace", ns]
        if self.webhook:
            cmd += ["--webhook-port", str(free_port()), "--webhook-addr", "127.0.0.1", "--webhook-host", "127.0.0.1",
                    "--webhook-insecure"]
        if os.environ.get("GENSCHED_TEST_DEBUG"):
            cmd.append("-v")
        self._out = open(self.log, "a")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._out, stderr=subprocess.STDOUT)
        wait_for(self._healthy, 60, what="operator liveness endpoint")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None
        self._out.close()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def logs(self) -> str:
        return self.log.read_text()


@pytest.fixture(params=[False], ids=["no-webhook"])
def operator(request: pytest.FixtureRequest, api: EmulatorServer, cluster: Cluster,
             tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator; tests can ask for its admission webhook with ``indirect`` parametrisation."""
    op = OperatorProcess(tmp_path / "kubeconfig", tmp_path / "operator.log", webhook=request.param)
    op.start()
    yield op
    op.stop()
    text = op.log.read_text()
    if "Traceback" in text:  # an operator traceback fails the test that caused it
        at = text.index("Traceback")
        pytest.fail(f"the operator logged a traceback:\n{text[max(0, at - 1500):at + 4000]}", pytrace=False)


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """Factory: ``prometheus_server(backfill=..., targets=[...])`` starts a real Prometheus."""
    if PrometheusServer.binary() is None:
        pytest.fail("prometheus is not installed: run `make tools` (scripts/install-tools.sh --prometheus)")
    started: list[PrometheusServer] = []

    def start(backfill: str | None = None, targets: list[str] | None = None) -> PrometheusServer:
        server = PrometheusServer(tmp_path / f"prom{len(started)}", targets)
        if backfill:
            server.backfill(backfill)
        started.append(server)
        return server.start()

    yield start
    for s in started:
        s.stop()
