"""The scheduling cycle through the real operator, kubectl and the API emulator: foreign GPU pods,
priorities and preemption, defragmentation, quotas."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import Cluster, OperatorProcess, wait_for
from tests.harness.tools import Kubectl

pytestmark = pytest.mark.integration


def batch(name: str, gpus: float, ns: str = "default", **spec: object) -> str:
    doc = {"apiVersion": "gensched.io/v1alpha1", "kind": "GenerativeJob", "metadata": {"name": name, "namespace": ns},
           "spec": {"mode": "Batch",
                    "model": {"name": "llama-2-7b", "parametersBillions": 7, "precision": "int4", "image": "w:1"},
                    "resources": {"gpus": gpus, "cpu": "1", "memory": "4Gi"},
                    "batch": {"input": "s3://in", **(spec.pop("batch", {}) or {})}, **spec}}
    return yaml.safe_dump(doc)


def foreign_pod(cluster: Cluster, name: str, node: str, gpus: int, ns: str = "other-team") -> None:
    emu = cluster.api.emulator
    assert emu is not None
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"app": "x"}},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
                                                       "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]},
           "status": {"phase": "Running"}}
    cluster.api.call(emu.create(emu.kinds[("", "pods")], ns, pod))


def job_of(cluster: Cluster, name: str, ns: str = "default") -> dict:
    job = cluster.get("batch", "jobs", ns, name)
    assert job is not None
    return job


def test_a_foreign_gpu_pod_keeps_gensched_off_its_gpus(cluster: Cluster, operator: OperatorProcess,
                                                       crds: Kubectl) -> None:
    cluster.add_node("gpu-a", gpus=2)
    foreign_pod(cluster, "someone-elses-training", "gpu-a", 1)
    cluster.standin.hold.update({"two", "one"})
    crds("apply", "-f", "-", stdin=batch("two", 2))
    gj = cluster.wait_phase("two", "Pending")
    wait_for(lambda: ((cluster.gj("two") or {}).get("status") or {}).get("queue", {}).get("reason"),
             what="a queue reason")
    crds("apply", "-f", "-", stdin=batch("one", 1))
    gj = cluster.wait_phase("one", "Running", timeout=120)
    assert gj["status"]["placement"]["node"] == "gpu-a"
    assert cluster.phase("two") == "Pending"  # the foreign pod's GPU is not handed out
    emu = cluster.api.emulator
    assert emu is not None
    cluster.api.call(emu.delete(emu.kinds[("", "pods")], "other-team", "someone-elses-training"))
    cluster.standin.hold.discard("one")
    cluster.wait_phase("one", "Succeeded")
    cluster.wait_phase("two", "Running")
    out = crds("get", "gj").stdout
    assert "QUEUE" in out.splitlines()[0] and "WAITING" in out.splitlines()[0]


def test_a_high_priority_job_preempts_an_interruptible_one_which_resumes(cluster: Cluster, operator: OperatorProcess,
                                                                         crds: Kubectl) -> None:
    cluster.add_node("gpu-a", gpus=2)
    cluster.standin.hold.update({"low", "pinned"})
    crds("apply", "-f", "-", stdin=batch("low", 2, priority=0, batch={"interruptible": True}))
    cluster.wait_phase("low", "Running")
    crds("apply", "-f", "-", stdin=batch("vip", 2, priority=100))
    cluster.wait_phase("vip", "Running", timeout=60)
    low = cluster.gj("low")
    assert low is not None and low["status"]["phase"] == "Pending"
    assert low["status"]["queue"]["preemptions"] == 1
    reasons = {e["reason"] for e in cluster.events_for("low")}
    assert {"Preempted", "Requeued"} <= reasons
    assert "Preempting" in {e["reason"] for e in cluster.events_for("vip")}
    assert job_of(cluster, "low")["spec"]["suspend"] is True
    cluster.standin.hold.discard("low")
    cluster.wait_phase("vip", "Succeeded")
    cluster.wait_phase("low", "Succeeded", timeout=60)  # re-placed: its Job was released again and ran


def test_a_non_interruptible_job_is_never_preempted(cluster: Cluster, operator: OperatorProcess,
                                                    crds: Kubectl) -> None:
    cluster.add_node("gpu-a", gpus=2)
    cluster.standin.hold.add("pinned")
    crds("apply", "-f", "-", stdin=batch("pinned", 2, priority=0))
    cluster.wait_phase("pinned", "Running")
    crds("apply", "-f", "-", stdin=batch("vip", 2, priority=100))
    wait_for(lambda: ((cluster.gj("vip") or {}).get("status") or {}).get("queue", {}).get("reason") == "Unschedulable",
             what="vip waiting")
    assert cluster.phase("pinned") == "Running"
    assert job_of(cluster, "pinned")["spec"]["suspend"] is False


def test_a_fragmented_cluster_is_defragmented_for_an_eight_gpu_job(cluster: Cluster, operator: OperatorProcess,
                                                                   crds: Kubectl) -> None:
    cluster.add_node("gpu-a", gpus=8)
    cluster.standin.hold.update({"small", "wide", "big"})
    crds("apply", "-f", "-", stdin=batch("small", 1, batch={"interruptible": True}))
    assert cluster.wait_phase("small", "Running")["status"]["placement"]["node"] == "gpu-a"
    h100 = "NVIDIA-H100-80GB-HBM3"
    cluster.add_node("gpu-b", gpus=8, product=h100)
    wide = yaml.safe_load(batch("wide", 7))
    wide["spec"]["resources"]["gpuModels"] = [h100]  # only gpu-b can take it
    crds("apply", "-f", "-", stdin=yaml.safe_dump(wide))
    assert cluster.wait_phase("wide", "Running")["status"]["placement"]["node"] == "gpu-b"
    # 7 GPUs free on gpu-a, 1 on gpu-b: no node has 8 until 'small' moves to gpu-b
    crds("apply", "-f", "-", stdin=batch("big", 8))
    gj = cluster.wait_phase("big", "Running", timeout=60)
    assert gj["status"]["placement"]["node"] == "gpu-a"
    small = cluster.wait_phase("small", "Running", timeout=60)
    assert small["status"]["placement"]["node"] == "gpu-b"
    assert "Defragment" in {e["reason"] for e in cluster.events_for("small")}
    assert cluster.phase("wide") == "Running"


def test_quotas_bind_per_namespace(cluster: Cluster, operator: OperatorProcess, crds: Kubectl) -> None:
    cluster.add_node("gpu-a", gpus=8)
    policy = {"apiVersion": "gensched.io/v1alpha1", "kind": "SchedulingPolicy", "metadata": {"name": "quotas"},
              "spec": {"default": True, "quotas": [{"namespace": "team-a", "maxGpus": 1}]}}
    crds("apply", "-f", "-", stdin=yaml.safe_dump(policy))
    cluster.standin.hold.update({"a1", "a2", "b1"})
    crds("apply", "-f", "-", stdin=batch("a1", 1, ns="team-a"))
    wait_for(lambda: ((cluster.gj("a1", "team-a") or {}).get("status") or {}).get("phase") == "Running",
             what="a1 running")
    crds("apply", "-f", "-", stdin=batch("a2", 1, ns="team-a"))
    crds("apply", "-f", "-", stdin=batch("b1", 1, ns="team-b"))
    wait_for(lambda: ((cluster.gj("b1", "team-b") or {}).get("status") or {}).get("phase") == "Running",
             what="b1 running")
    a2 = wait_for(lambda: (((cluster.gj("a2", "team-a") or {}).get("status") or {}).get("queue") or {})
                  .get("reason") == "QuotaExceeded" and cluster.gj("a2", "team-a"), what="a2 held by quota")
    assert "quota" in a2["status"]["message"] and "maxGpus" in a2["status"]["message"]
    cluster.standin.hold.discard("a1")
    wait_for(lambda: ((cluster.gj("a2", "team-a") or {}).get("status") or {}).get("phase") == "Running",
             timeout=60, what="a2 running after a1 finished")


def test_an_unknown_priority_class_is_named(cluster: Cluster, operator: OperatorProcess, crds: Kubectl) -> None:
    cluster.add_node("gpu-a", gpus=1)
    crds("apply", "-f", "-", stdin=batch("classy", 1, priorityClassName="does-not-exist"))
    cluster.wait_phase("classy", "Pending")
    wait_for(lambda: "priorityClassName" in ((cluster.gj("classy") or {}).get("status") or {}).get("message", ""),
             what="the field named")
