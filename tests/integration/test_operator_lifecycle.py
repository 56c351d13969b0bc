"""The operator (kopf's real loop, as `gensched run`) against the API emulator, driven by kubectl."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import Cluster, OperatorProcess, wait_for
from tests.harness.tools import ROOT, Kubectl

pytestmark = pytest.mark.integration
EXAMPLES = ROOT / "workloads" / "examples"


def test_batch_job_is_placed_released_and_mirrored(cluster: Cluster, operator: OperatorProcess,
                                                   crds: Kubectl) -> None:
    cluster.add_node("gpu-a", gpus=4)
    crds("apply", "-f", str(EXAMPLES / "batch-llama-int4.yaml"))
    crds("wait", "--for=jsonpath={.status.phase}=Succeeded", "gj/synth-llama-int4", "--timeout=60s")
    gj = cluster.gj("synth-llama-int4")
    assert gj is not None
    st = gj["status"]
    assert st["placement"]["node"] == "gpu-a"
    assert st["placement"]["gpuMilli"] == 250
    assert st["gpuMemoryGiB"] == pytest.approx(4.91)
    assert st["gpuHours"] > 0
    assert {c["type"]: c["status"] for c in st["conditions"]}["Valid"] == "True"
    job = cluster.get("batch", "jobs", "default", "synth-llama-int4")
    assert job is not None and job["spec"]["suspend"] is False
    assert job["metadata"]["ownerReferences"][0]["uid"] == gj["metadata"]["uid"]
    tmpl = job["spec"]["template"]
    assert tmpl["metadata"]["annotations"]["gensched.io/gpu-milli"] == "250"
    terms = tmpl["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["gpu-a"]
    assert set(cluster.standin.bound.values()) == {"gpu-a"}
    # Events are posted asynchronously by kopf: wait for them rather than racing the poster.
    wait_for(lambda: {"Placed", "Succeeded"} <= {e["reason"] for e in cluster.events_for("synth-llama-int4")},
             what="Placed and Succeeded events")
    out = crds("get", "gj", "synth-llama-int4").stdout
    assert "Succeeded" in out and "gpu-a" in out
    described = crds("describe", "gj", "synth-llama-int4").stdout
    assert "Placed" in described and "on node gpu-a, GPU 0 (0.25 of the GPU)" in described
    metrics = operator.metrics()
    assert 'gensched_gpu_capacity{gpu_model="NVIDIA-A100-SXM4-80GB"} 4.0' in metrics  # per GPU model
    assert 'gensched_decisions_total{decision="Placed"} 1.0' in metrics


def test_invalid_spec_is_reported_and_creates_nothing(cluster: Cluster, operator: OperatorProcess,
                                                      crds: Kubectl) -> None:
    cluster.add_node("gpu-a")
    doc = yaml.safe_load((EXAMPLES / "batch-llama-int4.yaml").read_text())
    doc["metadata"]["name"] = "bad-gpus"
    doc["spec"]["resources"]["gpus"] = 1.5  # allowed by the schema, refused by the API rules
    crds("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    gj = cluster.wait_phase("bad-gpus", "Invalid")
    assert "spec.resources.gpus" in gj["status"]["message"]
    assert "whole number" in gj["status"]["message"]
    valid = next(c for c in gj["status"]["conditions"] if c["type"] == "Valid")
    assert valid["status"] == "False" and valid["reason"] == "InvalidSpec"
    warnings = wait_for(lambda: [e for e in cluster.events_for("bad-gpus") if e["type"] == "Warning"],
                        what="a Warning event")
    assert "spec.resources.gpus" in warnings[0]["message"]
    assert cluster.get("batch", "jobs", "default", "bad-gpus") is None
    # Fixing the spec re-admits the job: nothing was lost while it was Invalid.
    doc["spec"]["resources"]["gpus"] = 0.5
    crds("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    fixed = cluster.wait_phase("bad-gpus", "Succeeded")
    assert fixed["status"]["placement"]["gpuMilli"] == 500
    assert {c["type"]: c["status"] for c in fixed["status"]["conditions"]}["Valid"] == "True"


def test_schema_rejects_out_of_range_gpus_at_apply(crds: Kubectl) -> None:
    doc = yaml.safe_load((EXAMPLES / "batch-llama-int4.yaml").read_text())
    doc["spec"]["resources"]["gpus"] = 9
    result = crds("apply", "-f", "-", stdin=yaml.safe_dump(doc), check=False)
    assert result.returncode != 0
    assert "spec.resources.gpus" in result.stderr


def test_unschedulable_job_waits_then_runs_when_gpus_free(cluster: Cluster, operator: OperatorProcess,
                                                          crds: Kubectl) -> None:
    cluster.add_node("gpu-a", gpus=2)
    cluster.standin.hold.add("first")
    for name in ("first", "second"):
        doc = yaml.safe_load((EXAMPLES / "batch-70b-fp16.yaml").read_text())
        doc["metadata"]["name"] = name
        crds("apply", "-f", "-", stdin=yaml.safe_dump(doc))
        if name == "first":
            cluster.wait_phase("first", "Running")
    gj = cluster.wait_phase("second", "Pending")
    assert "waiting for GPUs" in gj["status"]["message"]
    job = cluster.get("batch", "jobs", "default", "second")
    assert job is not None and job["spec"]["suspend"] is True
    cluster.standin.hold.discard("first")
    cluster.wait_phase("first", "Succeeded")
    cluster.wait_phase("second", "Succeeded")


def test_restart_loses_no_job_and_never_hands_a_gpu_out_twice(cluster: Cluster, operator: OperatorProcess,
                                                              crds: Kubectl) -> None:
    cluster.add_node("gpu-a", gpus=2)
    cluster.standin.hold.add("holder")
    doc = yaml.safe_load((EXAMPLES / "batch-70b-fp16.yaml").read_text())
    doc["metadata"]["name"] = "holder"
    crds("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    cluster.wait_phase("holder", "Running")
    operator.stop(kill=True)  # crash, no cleanup
    doc["metadata"]["name"] = "newcomer"
    crds("apply", "-f", "-", stdin=yaml.safe_dump(doc))  # arrives while the operator is down
    operator.start()
    gj = cluster.wait_phase("newcomer", "Pending")
    assert "waiting for GPUs" in gj["status"]["message"]
    assert "rebuilt: 1 GPU nodes, 2000/2000 milli-GPU reserved" in operator.logs()
    cluster.standin.hold.discard("holder")
    cluster.wait_phase("holder", "Succeeded")
    cluster.wait_phase("newcomer", "Succeeded")
    placements = [json.loads(j["metadata"]["annotations"]["gensched.io/placement"])
                  for j in cluster.list("batch", "jobs")]
    assert len(placements) == 2


def test_delete_frees_gpus_and_children(cluster: Cluster, operator: OperatorProcess, crds: Kubectl) -> None:
    cluster.add_node("gpu-a", gpus=2)
    cluster.standin.hold.update({"one", "two"})
    doc = yaml.safe_load((EXAMPLES / "batch-70b-fp16.yaml").read_text())
    doc["metadata"]["name"] = "one"
    crds("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    cluster.wait_phase("one", "Running")
    doc["metadata"]["name"] = "two"
    crds("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    cluster.wait_phase("two", "Pending")
    crds("delete", "gj", "one", "--timeout=30s")
    wait_for(lambda: cluster.get("batch", "jobs", "default", "one") is None, what="Job garbage-collected")
    assert not [p for p in cluster.list("", "pods") if p["metadata"]["name"].startswith("one-")]
    cluster.wait_phase("two", "Running")


def test_serve_job_gets_a_rayservice_with_one_deployment_per_operator(
        cluster: Cluster, operator: OperatorProcess, crds: Kubectl) -> None:
    crds("apply", "-f", str(EXAMPLES / "serve-llama-operators.yaml"))
    waiting = cluster.wait_phase("chat-llama", "Pending")  # no GPU node yet: nothing deployed
    assert "waiting for GPUs" in waiting["status"]["message"]
    assert cluster.get("ray.io", "rayservices", "default", "chat-llama") is None
    cluster.add_node("gpu-a", gpus=2)
    gj = cluster.wait_phase("chat-llama", "Running")
    svc = cluster.get("ray.io", "rayservices", "default", "chat-llama")
    assert svc is not None
    assert svc["metadata"]["ownerReferences"][0]["uid"] == gj["metadata"]["uid"]
    config = yaml.safe_load(svc["spec"]["serveConfigV2"])
    names = [d["name"] for d in config["applications"][0]["deployments"]]
    assert names == ["embed-early", "middle", "late-head", "Ingress"]
    assert gj["status"]["rayServiceName"] == "chat-llama"
    # The operators' GPU shares (0.25 + 0.5 + 0.25) need one worker GPU, placed by the packing engine.
    workers = json.loads(svc["metadata"]["annotations"]["gensched.io/worker-placements"])
    assert [(w["node"], w["key"]) for w in workers] == [("gpu-a", "default/chat-llama#worker-0")]
    [group] = svc["spec"]["rayClusterConfig"]["workerGroupSpecs"]  # one group per reserved node
    assert group["replicas"] == 1 and group["groupName"].startswith("gpu-workers-")
    terms = group["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["gpu-a"]
    # That GPU is not handed out again, also after an operator restart.
    operator.stop()
    operator.start()
    crds("apply", "-f", str(EXAMPLES / "batch-70b-fp16.yaml"))  # needs 2 whole GPUs
    blocked = cluster.wait_phase("render-70b", "Pending")
    assert "waiting for GPUs" in blocked["status"]["message"]
    # Regrouping the layers rolls the RayService forward.
    doc = yaml.safe_load((EXAMPLES / "serve-llama-operators.yaml").read_text())
    doc["spec"]["serve"]["operators"] = [{"name": "front", "layers": "0-15"}, {"name": "back", "layers": "16-31"}]
    crds("apply", "-f", "-", stdin=yaml.safe_dump(doc))

    def deployments() -> list[str]:
        svc = cluster.get("ray.io", "rayservices", "default", "chat-llama") or {"spec": {"serveConfigV2": "{}"}}
        apps = (yaml.safe_load(svc["spec"]["serveConfigV2"]) or {}).get("applications") or [{}]
        return [d["name"] for d in apps[0].get("deployments", [])]
    wait_for(lambda: deployments() == ["front", "back", "Ingress"], what="RayService regrouped")
    # Deleting the Serve job frees its worker GPU: the waiting batch job gets both GPUs.
    crds("delete", "gj", "chat-llama", "--wait=false")
    placed = cluster.wait_phase("render-70b", "Running", timeout=30)
    assert placed["status"]["placement"]["gpuIndices"] == [0, 1]


def test_spec_change_after_placement_is_reported(cluster: Cluster, operator: OperatorProcess,
                                                 crds: Kubectl) -> None:
    cluster.add_node("gpu-a", gpus=2)
    cluster.standin.hold.add("render-70b")
    crds("apply", "-f", str(EXAMPLES / "batch-70b-fp16.yaml"))
    cluster.wait_phase("render-70b", "Running")
    doc = yaml.safe_load((EXAMPLES / "batch-70b-fp16.yaml").read_text())
    doc["spec"]["resources"]["gpus"] = 1
    crds("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    warning = wait_for(lambda: [e for e in cluster.events_for("render-70b") if e["reason"] == "SpecChangeIgnored"],
                       what="SpecChangeIgnored event")
    assert "delete and re-create" in warning[0]["message"]
    assert cluster.gj("render-70b")["status"]["placement"]["gpuIndices"] == [0, 1]


@pytest.mark.parametrize("operator", [True], ids=["webhook"], indirect=True)
def test_admission_webhook_rejects_bad_specs_at_apply(cluster: Cluster, operator: OperatorProcess,
                                                      crds: Kubectl) -> None:
    hooks = wait_for(lambda: [h for c in cluster.list("admissionregistration.k8s.io",
                                                      "validatingwebhookconfigurations")
                              for h in c.get("webhooks") or []], what="kopf to register its webhooks")
    assert {h["failurePolicy"] for h in hooks} == {"Ignore"}
    doc = yaml.safe_load((EXAMPLES / "batch-llama-int4.yaml").read_text())
    doc["spec"]["resources"]["gpus"] = 1.5
    result = crds("apply", "-f", "-", stdin=yaml.safe_dump(doc), check=False)
    assert result.returncode != 0
    assert "denied the request" in result.stderr and "spec.resources.gpus" in result.stderr
    assert cluster.gj("synth-llama-int4") is None  # nothing stored
    bad_policy = {"apiVersion": "gensched.io/v1alpha1", "kind": "SchedulingPolicy", "metadata": {"name": "p"},
                  "spec": {"timing": {"mode": "OffPeak"}}}
    result = crds("apply", "-f", "-", stdin=yaml.safe_dump(bad_policy), check=False)
    assert result.returncode != 0 and "offPeakWindows" in result.stderr
    operator.stop()  # webhook unreachable: failurePolicy Ignore lets work through; the controller validates
    doc["spec"]["resources"]["gpus"] = 0.5
    crds("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    assert cluster.gj("synth-llama-int4") is not None


def test_namespaced_operator_leaves_other_namespaces_alone(cluster: Cluster, crds: Kubectl, tmp_path) -> None:
    cluster.add_node("gpu-a", gpus=2)
    op = OperatorProcess(tmp_path / "kubeconfig", tmp_path / "ns-operator.log", namespaces=("ml",))
    op.start()
    try:
        doc = yaml.safe_load((EXAMPLES / "batch-llama-int4.yaml").read_text())
        crds("apply", "-n", "default", "-f", "-", stdin=yaml.safe_dump(doc))
        crds("apply", "-n", "ml", "-f", "-", stdin=yaml.safe_dump(doc))
        wait_for(lambda: cluster.phase("synth-llama-int4", "ml") == "Succeeded", what="job in ml to finish")
        assert cluster.phase("synth-llama-int4", "default") is None  # not ours: untouched
        assert cluster.get("batch", "jobs", "default", "synth-llama-int4") is None
    finally:
        op.stop()


def test_200_concurrent_jobs_never_over_commit_and_match_the_simulator(cluster: Cluster, operator: OperatorProcess,
                                                                        crds: Kubectl) -> None:
    from gensched.api import GenerativeJobSpec
    from gensched.controller.nodes import gpu_node_from
    from gensched.packing import Allocation, ClusterState, get_placer
    from gensched.packing.requests import request_for

    for i in range(6):
        cluster.add_node(f"gpu-{i}", gpus=8)
    policy = yaml.safe_load((EXAMPLES / "policy-default.yaml").read_text())
    policy["spec"]["packing"]["strategy"] = "BestFit"  # history-free, so a replay of the order is exact
    crds("apply", "-f", "-", stdin=yaml.safe_dump(policy))
    base = yaml.safe_load((EXAMPLES / "batch-llama-int4.yaml").read_text())
    shares = [0.25, 0.5, 1, 2, 0.25, 1, 0.75, 4]
    docs = []
    for i in range(200):
        doc = yaml.safe_load(yaml.safe_dump(base))
        doc["metadata"]["name"] = f"job-{i:03d}"
        doc["spec"]["resources"].update(gpus=shares[i % len(shares)], cpu="1", memory="1Gi")
        docs.append(doc)
        cluster.standin.hold.add(doc["metadata"]["name"])
    crds("apply", "-f", "-", stdin=yaml.safe_dump_all(docs), timeout=120)

    def decided(gj: dict | None) -> bool:
        status = (gj or {}).get("status") or {}
        if status.get("phase") in ("Placed", "Running"):
            return True
        return status.get("phase") == "Pending" and any(
            c["type"] == "Placed" and c["reason"] == "Unschedulable" for c in status.get("conditions") or [])

    def settled() -> bool:
        jobs = {j["metadata"]["name"]: j for j in cluster.list("gensched.io", "generativejobs")}
        return all(decided(jobs.get(d["metadata"]["name"])) for d in docs)
    wait_for(settled, timeout=400, every=1, what="all 200 jobs decided")
    wait_for(lambda: all(cluster.phase(d["metadata"]["name"]) != "Placed" for d in docs), timeout=60,
             what="placed jobs running")
    placements = [(json.loads(j["metadata"]["annotations"]["gensched.io/placement"]), j)
                  for j in cluster.list("batch", "jobs")
                  if "gensched.io/placement" in (j["metadata"].get("annotations") or {})]
    placements.sort(key=lambda pj: pj[0]["at"])
    used: dict[tuple[str, int], int] = {}
    for p, _ in placements:
        for g in p["gpus"]:
            used[(p["node"], g)] = used.get((p["node"], g), 0) + p["milli"]
    assert max(used.values()) <= 1000  # no GPU over-committed
    assert 0 < len(placements) < 200  # the cluster (48 GPUs) cannot take all 200 jobs
    # The simulator, fed the same requests in the operator's decision order, decides the same.
    state = ClusterState([n for n in (gpu_node_from(x) for x in cluster.list("", "nodes")) if n])
    placer = get_placer("BestFit")
    by_name = {d["metadata"]["name"]: d for d in docs}
    for p, job in placements:
        name = job["metadata"]["name"]
        out = placer.place(state, request_for(p["key"], GenerativeJobSpec.model_validate(by_name[name]["spec"])))
        assert isinstance(out, Allocation) and (out.node, list(out.gpu_indices)) == (p["node"], p["gpus"]), name
        state.reserve(out)
    # Nothing departs, so a job left Pending must still fit nowhere: no capacity was left idle by a lost decision.
    placed = {job["metadata"]["name"] for _, job in placements}
    for name, doc in by_name.items():
        if name not in placed:
            left = placer.place(state, request_for(f"default/{name}", GenerativeJobSpec.model_validate(doc["spec"])))
            assert not isinstance(left, Allocation), f"{name} is Pending but fits on {left.node}"


def test_mig_node_hands_out_whole_instances_and_keeps_them_across_a_restart(
        cluster: Cluster, operator: OperatorProcess, crds: Kubectl) -> None:
    cluster.add_node("mig-a", gpus=1, mig="3g.40gb")  # one A100 cut into two 3g.40gb instances
    doc = yaml.safe_load((EXAMPLES / "batch-llama-int4.yaml").read_text())  # 0.25 GPU, 4.9 GiB
    for name in ("one", "two"):
        cluster.standin.hold.add(name)
        doc["metadata"]["name"] = name
        crds("apply", "-f", "-", stdin=yaml.safe_dump(doc))
        gj = cluster.wait_phase(name, "Running")
        assert gj["status"]["placement"]["node"] == "mig-a"
        assert gj["status"]["placement"]["gpuMilli"] == 428  # a whole 3g instance, not the 250 asked for
    operator.stop(kill=True)
    operator.start()  # the reservations come back from the Jobs' records, instance-sized
    doc["metadata"]["name"] = "three"
    cluster.standin.hold.add("three")
    crds("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    gj = cluster.wait_phase("three", "Pending")
    assert "waiting for GPUs" in gj["status"]["message"]
    assert "rebuilt: 1 GPU nodes, 856/1000 milli-GPU reserved" in operator.logs()
    cluster.standin.hold.discard("one")
    cluster.wait_phase("three", "Running")  # the freed instance goes to the waiting job
    assert cluster.gj("three")["status"]["placement"]["gpuMilli"] == 428
