"""High availability: two and three operator replicas against one API, the leader killed (-9) again and
again during a burst. Never a GPU handed out twice, no job lost, takeover within the Lease's bound."""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import Cluster, OperatorProcess, wait_for
from tests.harness.invariants import InvariantWatch
from tests.harness.tools import Kubectl

pytestmark = pytest.mark.integration
LEASE_SECONDS = 6.0  # short for the test; the chart uses 10 s (takeover bound = duration + one retry)
LEASE_ENV = {"GENSCHED_LEASE_NAMESPACE": "default", "GENSCHED_LEASE_SECONDS": str(LEASE_SECONDS),
             "GENSCHED_LEASE_RETRY_SECONDS": "1"}


def job(name: str, gpus: float) -> dict:
    return {"apiVersion": "gensched.io/v1alpha1", "kind": "GenerativeJob", "metadata": {"name": name},
            "spec": {"mode": "Batch",
                     "model": {"name": "m", "parametersBillions": 1, "precision": "int4", "image": "w:1"},
                     "resources": {"gpus": gpus, "cpu": "1", "memory": "1Gi"}, "batch": {"input": "s3://in"}}}


def holder(cluster: Cluster) -> str | None:
    lease = cluster.get("coordination.k8s.io", "leases", "default", "gensched-leader")
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


def leader_of(ops: list[OperatorProcess], identity: str | None) -> OperatorProcess | None:
    for op in ops:
        if op.proc is not None and identity and f"-{op.proc.pid}-" in identity:
            return op
    return None


@pytest.mark.parametrize("replicas", [2, 3])
def test_killing_the_leader_during_a_burst_never_double_allocates(cluster: Cluster, crds: Kubectl, tmp_path: Path,
                                                                  replicas: int) -> None:
    rng = random.Random(replicas)
    for n in range(3):
        cluster.add_node(f"gpu-{n}", gpus=4)
    ops = [OperatorProcess(tmp_path / "kubeconfig", tmp_path / f"op{i}.log", env=LEASE_ENV) for i in range(replicas)]
    for op in ops:
        op.start()
    watch = InvariantWatch(lambda: copy.deepcopy(cluster.list("batch", "jobs"))).start()
    takeovers: list[float] = []
    names = [f"burst-{i:03d}" for i in range(36)]
    try:
        wait_for(lambda: leader_of(ops, holder(cluster)), 30, what="a leader")
        docs = [job(n, rng.choice([0.25, 0.5, 1, 1, 2, 4])) for n in names]
        for chunk in range(2):
            part = docs[chunk * 18:(chunk + 1) * 18]
            crds("apply", "-f", "-", stdin=yaml.safe_dump_all(part))
            old = holder(cluster)
            victim = leader_of(ops, old)
            assert victim is not None
            killed = time.monotonic()
            victim.stop(kill=True)
            wait_for(lambda old=old: holder(cluster) not in (None, old) and leader_of(ops, holder(cluster)),
                     LEASE_SECONDS * 3 + 10, what="a new leader")
            takeovers.append(time.monotonic() - killed)
            victim.start()  # it comes back as a standby
        wait_for(lambda: all(cluster.phase(n) == "Succeeded" for n in names), 240, every=1,
                 what="every job to succeed")
    finally:
        watch.stop()
        for op in ops:
            op.stop()
    assert watch.checks > 10
    assert watch.seen == [], watch.seen[:5]
    assert len({n for n in names if cluster.gj(n)}) == len(names)  # none lost
    # measured, not asserted (wall-clock speed): recorded in docs/testing.md from this line
    print(f"replicas={replicas} takeover seconds: {[round(t, 1) for t in takeovers]}; invariant checks {watch.checks}")
    for op in ops:
        assert "Traceback" not in op.logs(), op.logs()[-3000:]
