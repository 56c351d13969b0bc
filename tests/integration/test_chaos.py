"""Chaos: the operator behind a fault-injecting proxy (409/429/500/503 on writes, lost replies, latency, cut
watches) and killed with -9 at random during a burst, jobs finishing in random order. Invariants are
checked every 0.5 s while it runs; what was injected and what held is printed (docs/testing.md)."""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import Cluster, OperatorProcess
from tests.harness.faults import FaultProxy, Faults
from tests.harness.invariants import InvariantWatch
from tests.harness.server import EmulatorServer
from tests.harness.tools import Kubectl

pytestmark = pytest.mark.integration
JOBS = 120
NODES, GPUS = 4, 4


def job(name: str, gpus: float) -> dict:
    return {"apiVersion": "gensched.io/v1alpha1", "kind": "GenerativeJob", "metadata": {"name": name},
            "spec": {"mode": "Batch",
                     "model": {"name": "m", "parametersBillions": 1, "precision": "int4", "image": "w:1"},
                     "resources": {"gpus": gpus, "cpu": "1", "memory": "1Gi"}, "batch": {"input": "s3://in"}}}


class StuckWatch:
    """How long jobs wait while a node has room for them. Jobs that wait by design (behind the head job's
    held node, or while room is being made) are not counted; the rest is time lost to faults and restarts."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.since: dict[str, float] = {}
        self.longest = 0.0
        self.worst = ""

    def check(self) -> None:
        c = self.cluster
        used: dict[tuple[str, int], int] = {}
        for j in c.list("batch", "jobs"):
            raw = (j["metadata"].get("annotations") or {}).get("gensched.io/placement")
            finished = any(x.get("type") in ("Complete", "Failed") for x in (j.get("status") or {}).get("conditions")
                           or [])
            if raw and not finished:
                rec = json.loads(raw)
                for g in rec["gpus"]:
                    used[(rec["node"], g)] = used.get((rec["node"], g), 0) + int(rec["milli"])
        free = {f"gpu-{n}": [1000 - used.get((f"gpu-{n}", g), 0) for g in range(GPUS)] for n in range(NODES)}
        now = time.monotonic()
        for gj in c.list("gensched.io", "generativejobs"):
            name = gj["metadata"]["name"]
            st = gj.get("status") or {}
            gpus = float(gj["spec"]["resources"]["gpus"])
            fits = any((sum(1 for f in gpu_free if f == 1000) >= gpus) if gpus >= 1 else
                       any(f >= gpus * 1000 for f in gpu_free) for gpu_free in free.values())
            by_design = (st.get("queue") or {}).get("reason") in ("BehindHead", "Preempting", "Defragmenting")
            if st.get("phase") in (None, "Pending") and fits and not by_design:
                start = self.since.setdefault(name, now)
                if now - start > self.longest:
                    self.longest = now - start
                    self.worst = f"{name} ({gpus:g} GPU): {st.get('phase')} {(st.get('queue') or {}).get('reason')}: " \
                                 f"{(st.get('message') or '')[:160]}"
            else:
                self.since.pop(name, None)


def test_faults_and_kills_during_a_burst_break_no_invariant(api: EmulatorServer, cluster: Cluster, crds: Kubectl,
                                                            tmp_path: Path) -> None:
    rng = random.Random(2026)
    for n in range(NODES):
        cluster.add_node(f"gpu-{n}", gpus=GPUS)
    faults = Faults(seed=11, error_rate=0.08, lost_reply_rate=0.05, latency_rate=0.1, latency=(0.01, 0.2),
                    watch_cut_rate=0.2, skip=r"/healthz")
    with FaultProxy(api.url, faults) as proxy:
        kubeconfig = proxy.write_kubeconfig(tmp_path / "kubeconfig-faulty")
        op = OperatorProcess(kubeconfig, tmp_path / "operator.log",
                             env={"GENSCHED_LEADER_ELECTION": "1", "GENSCHED_LEASE_NAMESPACE": "default",
                                  "GENSCHED_LEASE_SECONDS": "4", "GENSCHED_LEASE_RETRY_SECONDS": "1",
                                  "GENSCHED_RESYNC_SECONDS": "10"})
        op.start()
        stuck = StuckWatch(cluster)
        watch = InvariantWatch(lambda: copy.deepcopy(cluster.list("batch", "jobs"))).start()
        names = [f"chaos-{i:03d}" for i in range(JOBS)]
        docs = [job(n, rng.choice([0.25, 0.5, 1, 1, 2, 4])) for n in names]
        kills = 0
        try:
            for part in range(4):
                crds("apply", "-f", "-", stdin=yaml.safe_dump_all(docs[part * 30:(part + 1) * 30]))
                for _ in range(rng.randint(2, 6)):
                    stuck.check()
                    time.sleep(0.5)
                if part in (1, 2):  # kill -9 at a random moment of the burst, restart at once
                    op.stop(kill=True)
                    kills += 1
                    op.start()
            deadline = time.monotonic() + 420
            while time.monotonic() < deadline and not all(cluster.phase(n) == "Succeeded" for n in names):
                stuck.check()
                time.sleep(0.5)
            phases = {n: cluster.phase(n) for n in names}
        finally:
            watch.stop()
            op.stop()
        report = proxy.report()
    print(f"chaos: {JOBS} jobs, {kills} kill -9, faults {report}; invariant checks {watch.checks}; "
          f"longest wait with room free {stuck.longest:.1f} s ({stuck.worst})")
    assert watch.checks > 20
    assert watch.seen == [], watch.seen[:5]
    assert [n for n, p in phases.items() if p != "Succeeded"] == []  # none lost or stuck
    assert proxy.total() > 0
    assert "Traceback" not in op.logs(), op.logs()[op.logs().index("Traceback") - 2000:][:5000]
