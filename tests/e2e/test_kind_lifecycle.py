"""The batch lifecycle on a real cluster (kind + Docker). Skipped where there is no Docker engine or kind."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.harness.tools import ROOT, tool

pytestmark = pytest.mark.e2e


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def kind_cluster() -> str:
    if not _docker_engine():
        pytest.skip("e2e needs a running Docker engine (none on this machine); the emulator tests cover the lifecycle")
    if shutil.which("kind") is None:
        pytest.skip("e2e needs the kind binary on PATH")
    subprocess.run(["kind", "create", "cluster", "--config", str(ROOT / "kind-config.yaml")], check=True)
    subprocess.run(["bash", str(ROOT / "scripts/kind-fake-gpus.sh")], check=True)
    yield "kind-gensched"
    subprocess.run(["kind", "delete", "cluster", "--name", "gensched"], check=False)


def test_batch_job_reaches_placed_on_kind(kind_cluster: str) -> None:
    kubectl = tool("kubectl") or "kubectl"
    subprocess.run([kubectl, "apply", "-f", str(ROOT / "crds")], check=True)
    subprocess.run([kubectl, "apply", "-f", str(ROOT / "workloads/examples/batch-llama-int4.yaml")], check=True)
    subprocess.run([kubectl, "wait", "--for=jsonpath={.status.phase}=Placed", "gj/synth-llama-int4",
                    "--timeout=120s"], check=True)
