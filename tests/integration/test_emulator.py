"""The API emulator itself: each stock-kmock breakage is fixed, and real kubectl works against it."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest

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
