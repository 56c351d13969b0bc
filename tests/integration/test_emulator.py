"""The API emulator itself: each stock-kmock breakage is fixed, and real kubectl works against it."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from tests.harness.cluster import ClusterStandIn, foreign_gpu_pod, gpu_node, taint
from tests.harness.server import EmulatorServer
from tests.harness.tools import Kubectl

pytestmark = pytest.mark.integration


def http(api: EmulatorServer, method: str, path: str, body: object = None,
         ctype: str = "application/json") -> tuple[int, dict, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(api.url + path, data=data, method=method, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"{}")


CM = "/api/v1/namespaces/default/configmaps"
MERGE = "application/merge-patch+json"


def test_objects_get_identity_and_lists_get_kind(api: EmulatorServer) -> None:
    code, _, obj = http(api, "POST", CM, {"metadata": {"name": "a"}, "data": {"k": "v"}})
    assert code == 201
    meta = obj["metadata"]
    assert meta["resourceVersion"].isdigit() and len(meta["uid"]) == 36 and meta["creationTimestamp"].endswith("Z")
    _, _, lst = http(api, "GET", CM)
    assert lst["kind"] == "ConfigMapList" and lst["apiVersion"] == "v1"
    assert int(lst["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])


def test_generate_name_gives_unique_names(api: EmulatorServer) -> None:
    names = {http(api, "POST", CM, {"metadata": {"generateName": "ev-"}})[2]["metadata"]["name"] for _ in range(5)}
    assert len(names) == 5 and all(n.startswith("ev-") and len(n) == 8 for n in names)


def test_watch_resumes_from_resource_version_as_json_stream(api: EmulatorServer) -> None:
    rv1 = http(api, "POST", CM, {"metadata": {"name": "old"}})[2]["metadata"]["resourceVersion"]
    http(api, "POST", CM, {"metadata": {"name": "new"}})
    req = urllib.request.Request(f"{api.url}{CM}?watch=true&resourceVersion={rv1}&timeoutSeconds=1")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("application/json")
        events = [json.loads(line) for line in r.read().splitlines() if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "new")]


def test_put_conflicts_on_stale_version_and_patch_kinds(api: EmulatorServer) -> None:
    obj = http(api, "POST", CM, {"metadata": {"name": "p"}, "data": {"a": "1"}})[2]
    stale = json.loads(json.dumps(obj))
    obj["data"] = {"a": "2"}
    assert http(api, "PUT", f"{CM}/p", obj)[0] == 200
    assert http(api, "PUT", f"{CM}/p", stale)[0] == 409
    code, _, merged = http(api, "PATCH", f"{CM}/p", {"data": {"b": "3", "a": None}}, "application/merge-patch+json")
    assert code == 200 and merged["data"] == {"b": "3"}
    rv = merged["metadata"]["resourceVersion"]
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
           {"op": "replace", "path": "/data/b", "value": "4"}]
    assert http(api, "PATCH", f"{CM}/p", ops, "application/json-patch+json")[0] == 200
    assert http(api, "PATCH", f"{CM}/p", ops, "application/json-patch+json")[0] == 409  # rv moved on


def test_status_is_kept_apart_and_generation_tracks_spec(crds: Kubectl, api: EmulatorServer) -> None:
    base = "/apis/gensched.io/v1alpha1/namespaces/default/generativejobs"
    doc = {"apiVersion": "gensched.io/v1alpha1", "kind": "GenerativeJob", "metadata": {"name": "g"},
           "spec": {"mode": "Batch", "model": {"name": "m", "parametersBillions": 1, "image": "i"},
                    "resources": {"gpus": 1}, "batch": {"input": "x"}}, "status": {"phase": "Running"}}
    code, _, obj = http(api, "POST", base, doc)
    assert code == 201 and "status" not in obj and obj["metadata"]["generation"] == 1
    assert obj["spec"]["model"]["precision"] == "bf16"  # schema default applied
    obj = http(api, "PATCH", f"{base}/g", {"status": {"phase": "Running"}}, "application/merge-patch+json")[2]
    assert "status" not in obj  # the main resource ignores status
    obj = http(api, "PATCH", f"{base}/g/status", {"status": {"phase": "Running"}},
               "application/merge-patch+json")[2]
    assert obj["status"] == {"phase": "Running"} and obj["metadata"]["generation"] == 1
    obj = http(api, "PATCH", f"{base}/g", {"spec": {"resources": {"gpus": 2}}}, "application/merge-patch+json")[2]
    assert obj["metadata"]["generation"] == 2 and obj["status"] == {"phase": "Running"}
    code, _, err = http(api, "PATCH", f"{base}/g", {"spec": {"resources": {"gpus": 20}}},
                        "application/merge-patch+json")
    assert code == 422 and err["details"]["causes"][0]["field"] == "spec.resources.gpus"


def test_finalizers_and_owner_garbage_collection(api: EmulatorServer) -> None:
    owner = http(api, "POST", CM, {"metadata": {"name": "owner", "finalizers": ["x/y"]}})[2]
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    http(api, "POST", CM, {"metadata": {"name": "child", "ownerReferences": [ref]}})
    http(api, "DELETE", f"{CM}/owner")
    held = http(api, "GET", f"{CM}/owner")[2]
    assert held["metadata"]["deletionTimestamp"]
    http(api, "PATCH", f"{CM}/owner", {"metadata": {"finalizers": None}}, "application/merge-patch+json")
    assert http(api, "GET", f"{CM}/owner")[0] == 404
    assert http(api, "GET", f"{CM}/child")[0] == 404


def test_selectors(api: EmulatorServer) -> None:
    for name, tier in (("s1", "gpu"), ("s2", "cpu"), ("s3", "gpu")):
        http(api, "POST", CM, {"metadata": {"name": name, "labels": {"tier": tier}}})
    names = lambda q: sorted(o["metadata"]["name"] for o in http(api, "GET", f"{CM}?{q}")[2]["items"])  # noqa: E731
    assert names("labelSelector=tier%3Dgpu") == ["s1", "s3"]
    assert names("labelSelector=tier%20in%20(cpu)") == ["s2"]
    assert names("labelSelector=tier!%3Dgpu") == ["s2"]
    assert names("fieldSelector=metadata.name%3Ds3") == ["s3"]


def test_kubectl_get_watch_sees_updates(crds: Kubectl, api: EmulatorServer) -> None:
    http(api, "POST", CM, {"metadata": {"name": "w"}, "data": {"v": "0"}})
    env_cmd = [crds.binary, "--cache-dir", str(crds.cache), "get", "configmaps", "-w", "--output-watch-events",
               "-o", "jsonpath={.type} {.object.data.v}{\"\\n\"}", "--request-timeout=10s"]
    import os
    proc = subprocess.Popen(env_cmd, env=dict(os.environ, KUBECONFIG=str(crds.kubeconfig)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    http(api, "PATCH", f"{CM}/w", {"data": {"v": "1"}}, "application/merge-patch+json")
    time.sleep(1.5)
    proc.terminate()
    out, err = proc.communicate(timeout=10)
    assert "ADDED 0" in out and "MODIFIED 1" in out, (out, err)


def test_kubectl_apply_get_delete_round_trip(crds: Kubectl) -> None:
    from tests.harness.tools import ROOT
    path = str(ROOT / "workloads/examples/policy-default.yaml")
    assert "created" in crds("apply", "-f", path).stdout
    assert "unchanged" in crds("apply", "-f", path).stdout
    out = crds("get", "gsp").stdout
    assert "default" in out and "Gensched" in out and "Immediate" in out
    assert "deleted" in crds("delete", "-f", path).stdout
    assert "No resources found" in crds("get", "schedulingpolicies").stderr


# ---------------------------------------------------------------- optimistic concurrency, versions, generation
def _conflict(result: tuple[int, dict, dict]) -> bool:
    code, _, body = result
    return code == 409 and body["kind"] == "Status" and body["reason"] == "Conflict"


NODE = "/api/v1/nodes"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
PCS = "/apis/scheduling.k8s.io/v1/priorityclasses"
PODS = "/api/v1/namespaces/default/pods"


@pytest.mark.parametrize("base,body", [
    (CM, {"metadata": {"name": "occ"}, "data": {"a": "1"}}),
    (NODE, {"metadata": {"name": "occ"}, "spec": {}}),
    (LEASES, {"metadata": {"name": "occ"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}),
    (PCS, {"metadata": {"name": "occ"}, "value": 10}),
    (PODS, {"metadata": {"name": "occ"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
], ids=["configmap", "node", "lease", "priorityclass", "pod"])
def test_stale_resource_version_conflicts_on_every_write(api: EmulatorServer, base: str, body: dict) -> None:
    code, _, obj = http(api, "POST", base, body)
    assert code == 201, obj
    stale = obj["metadata"]["resourceVersion"]
    fresh = http(api, "PATCH", f"{base}/occ", {"metadata": {"labels": {"v": "2"}}}, MERGE)[2]
    assert int(fresh["metadata"]["resourceVersion"]) > int(stale)
    old = json.loads(json.dumps(obj))
    old["metadata"]["labels"] = {"v": "3"}
    assert _conflict(http(api, "PUT", f"{base}/occ", old))
    for ctype in (MERGE, "application/strategic-merge-patch+json"):
        assert _conflict(http(api, "PATCH", f"{base}/occ", {"metadata": {"resourceVersion": stale,
                                                                            "labels": {"v": "3"}}}, ctype))
    ops = [{"op": "replace", "path": "/metadata/resourceVersion", "value": stale}]
    assert _conflict(http(api, "PATCH", f"{base}/occ", ops, "application/json-patch+json"))
    assert _conflict(http(api, "DELETE", f"{base}/occ", {"preconditions": {"resourceVersion": stale}}))
    assert _conflict(http(api, "DELETE", f"{base}/occ", {"preconditions": {"uid": "not-the-uid"}}))
    if base in (NODE, PODS):  # the status subresource takes the same precondition
        assert _conflict(http(api, "PUT", f"{base}/occ/status", dict(old, status={"phase": "Running"})))
        assert _conflict(http(api, "PATCH", f"{base}/occ/status", {"metadata": {"resourceVersion": stale},
                                                                       "status": {"phase": "x"}}, MERGE))
        assert http(api, "PATCH", f"{base}/occ/status", {"metadata": {"resourceVersion": fresh["metadata"][
            "resourceVersion"]}, "status": {"phase": "Running"}}, MERGE)[0] == 200
    else:
        assert http(api, "GET", f"{base}/occ/status")[0] == 404  # no status subresource on this kind
    now = http(api, "GET", f"{base}/occ")[2]
    assert now["metadata"]["labels"] == {"v": "2"}  # nothing stale got through
    assert http(api, "PUT", f"{base}/occ", now)[0] == 200  # the current version is accepted
    current = http(api, "GET", f"{base}/occ")[2]["metadata"]
    assert http(api, "DELETE", f"{base}/occ", {"preconditions": {"resourceVersion": current["resourceVersion"],
                                                                  "uid": current["uid"]}})[0] == 200
    assert http(api, "GET", f"{base}/occ")[0] == 404


def test_resource_version_increases_across_kinds_and_generation_counts_spec_changes(api: EmulatorServer) -> None:
    versions = []
    for base, body in ((CM, {"metadata": {"name": "g1"}}), (NODE, {"metadata": {"name": "g1"}}),
                       (PODS, {"metadata": {"name": "g1"}, "spec": {"containers": [{"name": "c", "image": "a"}]}})):
        versions.append(int(http(api, "POST", base, body)[2]["metadata"]["resourceVersion"]))
    pod = http(api, "PATCH", f"{PODS}/g1", {"metadata": {"labels": {"x": "y"}}}, MERGE)[2]
    versions.append(int(pod["metadata"]["resourceVersion"]))
    assert pod["metadata"]["generation"] == 1  # metadata is not spec
    pod = http(api, "PATCH", f"{PODS}/g1/status", {"status": {"phase": "Running"}}, MERGE)[2]
    versions.append(int(pod["metadata"]["resourceVersion"]))
    assert pod["metadata"]["generation"] == 1  # nor is status
    pod = http(api, "PATCH", f"{PODS}/g1", {"spec": {"activeDeadlineSeconds": 5}}, MERGE)[2]
    versions.append(int(pod["metadata"]["resourceVersion"]))
    assert pod["metadata"]["generation"] == 2
    same = http(api, "PATCH", f"{PODS}/g1", {"spec": {"activeDeadlineSeconds": 5}}, MERGE)[2]
    assert same["metadata"]["resourceVersion"] == pod["metadata"]["resourceVersion"]  # no-op: no new version
    assert versions == sorted(set(versions))
    assert int(http(api, "GET", "/api/v1/pods")[2]["metadata"]["resourceVersion"]) == versions[-1]


def test_names_and_labels_follow_the_api_servers_rules(api: EmulatorServer) -> None:
    code, _, err = http(api, "POST", CM, {"metadata": {"name": "x", "labels": {"job": "a" * 64}}})
    assert code == 422 and err["details"]["causes"][0]["field"] == "metadata.labels.job"
    code, _, err = http(api, "POST", CM, {"metadata": {"name": "Upper_Case"}})
    assert code == 422 and err["details"]["causes"][0]["field"] == "metadata.name"
    assert http(api, "POST", CM, {"metadata": {"name": "ok.name", "labels": {"gensched.io/job": "a" * 63}}})[0] \
        == 201
    assert http(api, "POST", CM, {"metadata": {"name": "c", "resourceVersion": "5"}})[0] == 500  # as etcd3 does


def test_dry_run_validates_without_committing(api: EmulatorServer) -> None:
    rv = http(api, "GET", CM)[2]["metadata"]["resourceVersion"]
    code, _, obj = http(api, "POST", f"{CM}?dryRun=All", {"metadata": {"name": "dry"}})
    assert code == 201 and obj["metadata"]["name"] == "dry"
    assert http(api, "GET", f"{CM}/dry")[0] == 404
    assert http(api, "GET", CM)[2]["metadata"]["resourceVersion"] == rv


def test_watch_behind_the_retained_history_gets_410_and_recent_ones_resume() -> None:
    small = EmulatorServer(history_size=20).start()
    try:
        first = http(small, "POST", CM, {"metadata": {"name": "h0"}})[2]["metadata"]["resourceVersion"]
        rvs = [http(small, "POST", CM, {"metadata": {"name": f"h{i}"}})[2]["metadata"]["resourceVersion"]
               for i in range(1, 200)]
        with urllib.request.urlopen(f"{small.url}{CM}?watch=true&resourceVersion={first}&timeoutSeconds=1",
                                    timeout=10) as r:
            events = [json.loads(x) for x in r.read().splitlines() if x.strip()]
        assert [e["type"] for e in events] == ["ERROR"] and events[0]["object"]["code"] == 410
        with urllib.request.urlopen(f"{small.url}{CM}?watch=true&resourceVersion={rvs[-6]}&timeoutSeconds=1",
                                    timeout=10) as r:
            events = [json.loads(x) for x in r.read().splitlines() if x.strip()]
        assert [e["object"]["metadata"]["name"] for e in events] == [f"h{i}" for i in range(195, 200)]
    finally:
        small.stop()


# ---------------------------------------------------------------- Lease, PriorityClass, Events, Pods
def _client(api: EmulatorServer, tmp_path: Path) -> ApiClient:
    from kubernetes import config
    return config.new_client_from_config(str(tmp_path / "kubeconfig"))


def test_lease_as_leader_election_uses_it(api: EmulatorServer, tmp_path: Path) -> None:
    from kubernetes import client, watch
    from kubernetes.client.rest import ApiException
    from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

    coord = client.CoordinationV1Api(_client(api, tmp_path))
    start_rv = coord.list_namespaced_lease("default").metadata.resource_version
    a, b = LeaseLock("gensched-leader", "default", "a"), LeaseLock("gensched-leader", "default", "b")
    a.api_instance = b.api_instance = coord
    now = lambda: str(datetime.now())  # noqa: E731  (leaderelection.py's own time format)
    assert a.create("gensched-leader", "default", LeaderElectionRecord("a", "15", now(), now()))
    assert not b.create("gensched-leader", "default", LeaderElectionRecord("b", "15", now(), now()))  # exists
    ok, record = b.get("gensched-leader", "default")
    assert ok and record.holder_identity == "a" and record.lease_duration == "15"
    assert a.update("gensched-leader", "default", LeaderElectionRecord("a", "15", now(), now()))  # renew
    # b read before a's renewal: its replace carries a stale resourceVersion and must lose.
    assert not b.update("gensched-leader", "default", LeaderElectionRecord("b", "15", now(), now()))
    assert b.get("gensched-leader", "default")[0]
    assert b.update("gensched-leader", "default", LeaderElectionRecord("b", "15", now(), now()))  # takeover
    assert not a.update("gensched-leader", "default", LeaderElectionRecord("a", "15", now(), now()))
    lease = coord.read_namespaced_lease("gensched-leader", "default")
    assert lease.spec.holder_identity == "b" and lease.spec.renew_time.tzinfo is not None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z",
                        http(api, "GET", f"{LEASES}/gensched-leader")[2]["spec"]["renewTime"])
    patched = coord.patch_namespaced_lease("gensched-leader", "default", {"spec": {"leaseTransitions": 1}})
    assert patched.spec.lease_transitions == 1 and patched.spec.holder_identity == "b"
    with pytest.raises(ApiException) as err:
        coord.patch_namespaced_lease("gensched-leader", "default", {"metadata": {"resourceVersion": start_rv},
                                                                    "spec": {"holderIdentity": "a"}})
    assert err.value.status == 409
    with pytest.raises(ApiException) as err:
        coord.patch_namespaced_lease("gensched-leader", "default", {"spec": {"leaseDurationSeconds": 0}})
    assert err.value.status == 422 and "spec.leaseDurationSeconds" in err.value.body
    assert [x.metadata.name for x in coord.list_lease_for_all_namespaces().items] == ["gensched-leader"]
    holders = [e["object"].spec.holder_identity for e in watch.Watch().stream(
        coord.list_namespaced_lease, "default", resource_version=start_rv, timeout_seconds=1)]
    assert holders == ["a", "a", "b", "b"]  # created, renewed, taken over, transitions patched
    with pytest.raises(ApiException) as err:
        coord.delete_namespaced_lease("gensched-leader", "default", body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=start_rv)))
    assert err.value.status == 409
    coord.delete_namespaced_lease("gensched-leader", "default", body=client.V1DeleteOptions(
        preconditions=client.V1Preconditions(resource_version=patched.metadata.resource_version)))
    assert coord.list_namespaced_lease("default").items == []


def test_priority_classes(api: EmulatorServer, tmp_path: Path) -> None:
    from kubernetes import client
    sched = client.SchedulingV1Api(_client(api, tmp_path))
    pc = sched.create_priority_class(client.V1PriorityClass(metadata=client.V1ObjectMeta(name="batch-low"),
                                                            value=100, description="deferrable"))
    assert pc.preemption_policy == "PreemptLowerPriority" and not pc.global_default
    sched.create_priority_class(client.V1PriorityClass(metadata=client.V1ObjectMeta(name="serve-high"), value=1000,
                                                       global_default=True, preemption_policy="Never"))
    code, _, err = http(api, "POST", PCS, {"metadata": {"name": "second-default"}, "value": 5,
                                              "globalDefault": True})
    assert code == 403 and "serve-high is already marked as default" in err["message"]
    code, _, err = http(api, "POST", PCS, {"metadata": {"name": "no-value"}})
    assert code == 422 and err["details"]["causes"][0]["field"] == "value"
    code, _, err = http(api, "POST", PCS, {"metadata": {"name": "bad-policy"}, "value": 1,
                                              "preemptionPolicy": "Sometimes"})
    assert code == 422 and err["details"]["causes"][0]["field"] == "preemptionPolicy"
    code, _, err = http(api, "POST", PCS, {"metadata": {"name": "too-high"}, "value": 2_000_000_000})
    assert code == 422 and "reserved for system" in err["message"]
    code, _, err = http(api, "PATCH", f"{PCS}/batch-low", {"value": 200}, MERGE)
    assert code == 422 and "immutable" in err["message"]
    assert http(api, "PATCH", f"{PCS}/batch-low", {"description": "later"}, MERGE)[0] == 200
    assert sorted((p.metadata.name, p.value) for p in sched.list_priority_class().items) == [
        ("batch-low", 100), ("serve-high", 1000)]


def test_kubectl_discovers_leases_and_priorityclasses(kubectl: Kubectl, api: EmulatorServer) -> None:
    http(api, "POST", LEASES, {"metadata": {"name": "gensched-leader"}, "spec": {"holderIdentity": "op-0"}})
    http(api, "POST", PCS, {"metadata": {"name": "batch-low"}, "value": 100})
    out = kubectl("get", "leases", "-A").stdout
    assert "HOLDER" in out and "gensched-leader" in out and "op-0" in out
    out = kubectl("get", "priorityclasses").stdout
    assert "VALUE" in out and "batch-low" in out and "100" in out and "PreemptLowerPriority" in out
    assert "batch-low" in kubectl("get", "pc").stdout
    resources = kubectl("api-resources").stdout
    assert re.search(r"leases\s+coordination.k8s.io/v1\s+true\s+Lease", resources)
    assert re.search(r"priorityclasses\s+pc\s+scheduling.k8s.io/v1\s+false\s+PriorityClass", resources)
    named = kubectl("get", "lease", "gensched-leader", "-o", "name").stdout
    assert named == "lease.coordination.k8s.io/gensched-leader\n"


def test_events_created_with_the_python_client(api: EmulatorServer, tmp_path: Path) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    c = _client(api, tmp_path)
    core, events = client.CoreV1Api(c), client.EventsV1Api(c)
    ref = client.V1ObjectReference(api_version="gensched.io/v1alpha1", kind="GenerativeJob", name="job-a",
                                   namespace="default", uid="u-1")
    now = datetime.now(UTC)
    ev = core.create_namespaced_event("default", client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="job-a."), involved_object=ref, reason="Placed",
        message="on node gpu-a", type="Normal", first_timestamp=now, last_timestamp=now, count=1,
        source=client.V1EventSource(component="gensched")))
    assert ev.metadata.name.startswith("job-a.") and ev.involved_object.name == "job-a"
    new_style = core.create_namespaced_event("default", client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="job-a."), involved_object=ref, reason="Released",
        message="x" * 1024, type="Normal", event_time=now, action="Release", reporting_component="gensched.io/op",
        reporting_instance="op-0"))
    assert new_style.reason == "Released"
    with pytest.raises(ApiException) as err:  # an Event with eventTime is held to the strict rules
        core.create_namespaced_event("default", client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name="job-a."), involved_object=ref, reason="Released",
            message="x" * 1025, type="Normal", event_time=now, action="Release",
            reporting_component="gensched.io/op", reporting_instance="op-0"))
    assert err.value.status == 422 and '"field":"message"' in err.value.body.replace(" ", "")
    with pytest.raises(ApiException) as err:
        core.create_namespaced_event("other", client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name="job-a."), involved_object=ref, reason="Placed"))
    assert err.value.status == 422 and "involvedObject.namespace" in err.value.body
    listed = core.list_namespaced_event("default", field_selector="involvedObject.name=job-a,reason=Placed")
    assert [e.metadata.name for e in listed.items] == [ev.metadata.name]
    v1 = events.create_namespaced_event("default", client.EventsV1Event(
        metadata=client.V1ObjectMeta(generate_name="job-a."), event_time=now, reason="Placed", note="on gpu-a",
        type="Normal", action="Place", regarding=ref, reporting_controller="gensched.io/op", reporting_instance="op-0"))
    assert v1.regarding.name == "job-a" and v1.event_time is not None
    code, _, body = http(api, "POST", "/apis/events.k8s.io/v1/namespaces/default/events",
                         {"metadata": {"name": "no-time"}, "reason": "x", "type": "Normal"})
    assert code == 422 and body["details"]["causes"][0]["field"] == "eventTime"


def test_pods_listed_and_watched_across_namespaces_by_node_and_label(api: EmulatorServer, tmp_path: Path) -> None:
    from kubernetes import client, watch
    core = client.CoreV1Api(_client(api, tmp_path))
    start_rv = core.list_pod_for_all_namespaces().metadata.resource_version
    spec = {"containers": [{"name": "c", "image": "i"}]}
    for ns, name, node, labels in (("team-a", "bound-a", "gpu-a", {"app": "x"}), ("team-b", "bound-b", "gpu-b", {}),
                                   ("team-b", "pending", None, {"app": "x"}), ("default", "done", "gpu-a", {})):
        body = {"metadata": {"name": name, "labels": labels}, "spec": {**spec, **({"nodeName": node} if node else {})}}
        http(api, "POST", f"/api/v1/namespaces/{ns}/pods", body)
    http(api, "PATCH", "/api/v1/namespaces/default/pods/done/status", {"status": {"phase": "Succeeded"}}, MERGE)
    pick = lambda **kw: sorted(p.metadata.name for p in core.list_pod_for_all_namespaces(**kw).items)  # noqa: E731
    assert pick(field_selector="spec.nodeName!=") == ["bound-a", "bound-b", "done"]
    assert pick(field_selector="spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed") == [
        "bound-a", "bound-b"]
    assert pick(field_selector="spec.nodeName=gpu-a") == ["bound-a", "done"]
    assert pick(label_selector="app=x") == ["bound-a", "pending"]
    assert pick(label_selector="app=x", field_selector="spec.nodeName!=") == ["bound-a"]
    assert pick(label_selector="!app") == ["bound-b", "done"]
    seen = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        core.list_pod_for_all_namespaces, field_selector="spec.nodeName!=", resource_version=start_rv,
        timeout_seconds=1)]
    assert seen == [("ADDED", "bound-a"), ("ADDED", "bound-b"), ("ADDED", "done"), ("MODIFIED", "done")]


# ---------------------------------------------------------------- the cluster stand-in
def _job(name: str, node: str, tolerations: list | None = None) -> dict:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}
    pod_spec = {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never", "affinity": affinity,
                **({"tolerations": tolerations} if tolerations else {})}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
            "spec": {"suspend": False, "template": {"metadata": {}, "spec": pod_spec}}}


def _stand_in(api: EmulatorServer, **kw: object) -> ClusterStandIn:
    """A stand-in that is ticked by hand: each tick is one deterministic pass of the controllers."""
    assert api.emulator is not None
    return ClusterStandIn(api.emulator, **kw)  # type: ignore[arg-type]


def _phase(api: EmulatorServer, job: str) -> str | None:
    assert api.emulator is not None
    pods = [p for p in api.emulator.list("", "pods", "default") if p["metadata"]["name"].startswith(job + "-")]
    return (pods[0].get("status") or {}).get("phase") if pods else None


def test_stand_in_respects_taints_and_cordons(api: EmulatorServer) -> None:
    emu = api.emulator
    assert emu is not None
    s = _stand_in(api)
    nodes, jobs = emu.kinds[("", "nodes")], emu.kinds[("batch", "jobs")]
    api.call(emu.create(nodes, None, gpu_node("tainted", taints=[taint("nvidia.com/gpu", "present")])))
    api.call(emu.create(nodes, None, gpu_node("cordoned", unschedulable=True)))
    api.call(emu.create(nodes, None, gpu_node("soft", taints=[taint("spot", effect="PreferNoSchedule")])))
    assert emu.get("", "nodes", None, "cordoned")["spec"] == {"unschedulable": True}
    for name, node, tol in (("t", "tainted", None), ("tol", "tainted", [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                                         "effect": "NoSchedule"}]),
                            ("c", "cordoned", None), ("p", "soft", None)):
        api.call(emu.create(jobs, "default", _job(name, node, tol)))
    for _ in range(3):
        api.call(s.tick())
    assert sorted(s.bound.values()) == ["soft", "tainted"]  # only the tolerating pod and the soft taint
    assert _phase(api, "t") == "Pending" and _phase(api, "c") == "Pending"
    api.call(s.set_taints("tainted", []))
    api.call(s.cordon("cordoned", False))
    assert "unschedulable" not in emu.get("", "nodes", None, "cordoned")["spec"]
    for _ in range(2):
        api.call(s.tick())
    assert sorted(s.bound.values()) == ["cordoned", "soft", "tainted", "tainted"]


def test_stand_in_foreign_gpu_pods(api: EmulatorServer, tmp_path: Path) -> None:
    from kubernetes import client
    emu = api.emulator
    assert emu is not None
    s = _stand_in(api)
    api.call(emu.create(emu.kinds[("", "nodes")], None, gpu_node("gpu-a", gpus=4)))
    api.call(s.add_foreign_gpu_pod("someone-elses", "gpu-a", gpus=3, namespace="research"))
    api.call(s.tick())
    core = client.CoreV1Api(_client(api, tmp_path))
    bound = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=gpu-a,status.phase=Running").items
    assert [(p.metadata.namespace, p.metadata.name) for p in bound] == [("research", "someone-elses")]
    c = bound[0].spec.containers[0].resources
    assert c.requests == {"nvidia.com/gpu": "3"} == c.limits and not bound[0].metadata.owner_references
    api.call(s.finish_pod("research", "someone-elses"))
    assert emu.get("", "pods", "research", "someone-elses")["status"]["phase"] == "Succeeded"
    with pytest.raises(ValueError, match="gpus must be >= 1"):
        foreign_gpu_pod("x", "gpu-a", gpus=0)


def _finish_order(seed: int) -> list[str]:
    api = EmulatorServer().start()
    try:
        emu = api.emulator
        assert emu is not None
        s = _stand_in(api, run_seconds=lambda job: 1e9 if job["metadata"]["name"] == "long" else 0.0, seed=seed)
        api.call(emu.create(emu.kinds[("", "nodes")], None, gpu_node("gpu-a")))
        for name in [f"j{i}" for i in range(8)] + ["long"]:
            api.call(emu.create(emu.kinds[("batch", "jobs")], "default", _job(name, "gpu-a")))
        for _ in range(4):  # create pods, bind them, finish them, mirror into Job status
            api.call(s.tick())
        assert _phase(api, "long") == "Running"  # its duration (per job) is not over
        complete = {j["metadata"]["name"] for j in emu.list("batch", "jobs")
                    if any(c["type"] == "Complete" for c in (j.get("status") or {}).get("conditions") or [])}
        assert complete == {f"j{i}" for i in range(8)}
        return [k.split("/")[1].rsplit("-", 1)[0] for k in s.finished]
    finally:
        api.stop()


def test_stand_in_finishes_pods_in_a_seeded_random_order() -> None:
    first, again, other = _finish_order(3), _finish_order(3), _finish_order(4)
    assert sorted(first) == [f"j{i}" for i in range(8)]
    assert first == again  # the same seed, the same order
    assert first != sorted(first) and other != first  # shuffled, and by the seed
    with pytest.raises(ValueError, match="run_seconds range"):
        ClusterStandIn(None, run_seconds=(3.0, 1.0))  # type: ignore[arg-type]
