"""The fault-injecting proxy (tests/harness/faults.py) in front of the real emulator, driven by plain HTTP,
real kubectl and the kubernetes python client: what it injects is what clients see, and what it counts."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.harness.faults import FAULT_KINDS, FaultProxy, Faults
from tests.harness.server import EmulatorServer
from tests.harness.tools import Kubectl, tool

pytestmark = pytest.mark.integration

CM = "/api/v1/namespaces/default/configmaps"
REASONS = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
           504: "Timeout"}


def request(base: str, method: str, path: str, body: object = None,
         ctype: str = "application/json") -> tuple[int, dict, dict]:
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request(method, path, json.dumps(body) if body is not None else None, {"Content-Type": ctype})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.headers), json.loads(data or b"{}")


@pytest.fixture
def start_proxy(api: EmulatorServer) -> Iterator:
    started: list[FaultProxy] = []

    def start(faults: Faults) -> FaultProxy:
        proxy = FaultProxy(api.url, faults).start()
        started.append(proxy)
        return proxy

    yield start
    for p in started:
        p.stop()


def cm_manifest(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "b"}})


def names(api: EmulatorServer) -> set[str]:
    assert api.emulator is not None
    return {o["metadata"]["name"] for o in api.emulator.list("", "configmaps", "default")}


def test_injected_errors_are_answered_without_forwarding_and_counted(api: EmulatorServer, start_proxy) -> None:
    proxy = start_proxy(Faults(seed=3, error_rate=0.5))
    seen: Counter[int] = Counter()
    created = set()
    for i in range(80):
        code, headers, body = request(proxy.url, "POST", CM, {"metadata": {"name": f"e{i}"}})
        if code == 201:
            created.add(f"e{i}")
            continue
        seen[code] += 1
        assert body["kind"] == "Status" and body["code"] == code and body["reason"] == REASONS[code]
        assert "injected" in body["message"]
        if code == 429:
            assert headers["Retry-After"] == "1"
    assert set(seen) == {409, 429, 500, 503}  # every kind of error came up with this seed
    assert names(api) == created  # an injected error means the write never reached the API
    assert proxy.counts == {**dict.fromkeys(FAULT_KINDS, 0), **{f"error_{c}": n for c, n in seen.items()}}
    assert proxy.traffic["writes"] == 80 and proxy.traffic["forwarded"] == len(created)
    for _ in range(20):  # reads are never faulted
        assert request(proxy.url, "GET", CM)[0] == 200
    assert proxy.total() == sum(seen.values())


def test_lost_replies_commit_but_answer_504(api: EmulatorServer, start_proxy) -> None:
    proxy = start_proxy(Faults(seed=5, lost_reply_rate=0.5))
    timed_out = []
    for i in range(40):
        code, _, body = request(proxy.url, "POST", CM, {"metadata": {"name": f"l{i}"}, "data": {"v": "0"}})
        assert code in (201, 504), body
        if code == 504:
            assert body["reason"] == "Timeout"
            timed_out.append(f"l{i}")
    assert 0 < len(timed_out) < 40
    assert names(api) == {f"l{i}" for i in range(40)}  # every write committed, answered or not
    lost = proxy.lost_replies()
    assert [x.name for x in lost] == timed_out and proxy.counts["lost_reply"] == len(timed_out)
    assert api.emulator is not None
    for x in lost:  # the proxy recorded the version the lost write committed
        assert x.resource_version == api.emulator.get("", "configmaps", "default", x.name)["metadata"][
            "resourceVersion"]
    # Resolving the unknown outcome by trying again sees the commit: the create is refused as existing.
    with proxy.paused():
        code, _, body = request(proxy.url, "POST", CM, {"metadata": {"name": timed_out[0]}})
    assert code == 409 and body["reason"] == "AlreadyExists"
    proxy.configure(lost_reply_rate=1.0)
    code, _, _ = request(proxy.url, "PATCH", f"{CM}/l0", {"data": {"v": "1"}}, "application/merge-patch+json")
    assert code == 504 and api.emulator.get("", "configmaps", "default", "l0")["data"] == {"v": "1"}


def _read_watch(base: str, path: str) -> tuple[list[dict], str]:
    """Events of one watch request, and how it ended: 'clean' (terminating chunk) or 'broken'."""
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("GET", path)
    resp = conn.getresponse()
    assert resp.status == 200
    # read(), not readline(): http.client's chunked readline reports a dropped stream as a clean end.
    try:
        data, how = resp.read(), "clean"
    except http.client.IncompleteRead as exc:
        data, how = exc.partial, "broken"
    events = [json.loads(line) for line in data.splitlines() if line.strip()]
    conn.close()
    return events, how


@pytest.mark.parametrize("abort", [False, True], ids=["ended", "dropped"])
def test_watch_streams_are_cut_after_events_and_a_rewatch_resumes(api: EmulatorServer, start_proxy,
                                                                  abort: bool) -> None:
    start_rv = request(api.url, "GET", CM)[2]["metadata"]["resourceVersion"]
    for i in range(10):
        request(api.url, "POST", CM, {"metadata": {"name": f"w{i}"}})
    proxy = start_proxy(Faults(seed=1, watch_cut_rate=1.0, watch_cut_events=(3, 3), watch_cut_seconds=(600, 600),
                               watch_abort_share=1.0 if abort else 0.0))
    cursor, seen, endings = start_rv, [], []
    while len(seen) < 10:
        assert len(endings) < 10, "the watch never got past the cuts"
        # timeoutSeconds ends the last, short stream on the emulator's side once it has nothing more to send.
        events, how = _read_watch(proxy.url, f"{CM}?watch=true&resourceVersion={cursor}&timeoutSeconds=2")
        endings.append(how)
        for e in events:
            seen.append(e["object"]["metadata"]["name"])
            cursor = e["object"]["metadata"]["resourceVersion"]
    assert seen == [f"w{i}" for i in range(10)]  # in order, nothing lost or repeated across the cuts
    assert endings == ["broken" if abort else "clean"] * 3 + ["clean"]
    assert proxy.counts["watch_cut"] == 3 and proxy.traffic["watches"] == 4
    details = [i.detail for i in proxy.injections if i.fault == "watch_cut"]
    assert details == [f"{'dropped' if abort else 'ended'} after 3 events"] * 3


def test_an_idle_watch_is_cut_after_its_seconds(api: EmulatorServer, start_proxy) -> None:
    proxy = start_proxy(Faults(seed=2, watch_cut_rate=1.0, watch_cut_events=(1000, 1000),
                               watch_cut_seconds=(0.5, 0.5), watch_abort_share=0.0))
    events, how = _read_watch(proxy.url, f"{CM}?watch=true&resourceVersion=1")  # nothing to send: only the cut ends it
    assert events == [] and how == "clean"
    assert proxy.counts["watch_cut"] == 1
    assert [i.detail for i in proxy.injections] == ["ended after 0.50s, 0 events"]


def test_kubectl_through_the_proxy(api: EmulatorServer, start_proxy, tmp_path: Path) -> None:
    binary = tool("kubectl")
    if binary is None:
        pytest.fail("kubectl not installed: run `make tools` (scripts/install-tools.sh)")
    proxy = start_proxy(Faults(seed=4, latency_rate=1.0, latency=(0.01, 0.05)))
    k = Kubectl(binary, proxy.write_kubeconfig(tmp_path / "kubeconfig-faulty"), tmp_path / "cache")
    assert "No resources found" in k("get", "configmaps").stderr  # discovery and reads pass, only delayed
    assert proxy.counts["latency"] == proxy.traffic["requests"] > 0
    proxy.configure(latency_rate=0.0, error_rate=1.0, error_codes=(500,))
    # `kubectl create configmap` sends protobuf, which the emulator refuses (415); `create -f` sends JSON.
    r = k("create", "-f", "-", check=False, stdin=cm_manifest("k1"))
    assert r.returncode != 0 and "injected by the fault proxy" in r.stderr, r.stderr
    assert "k1" not in names(api)
    proxy.configure(error_rate=0.0, lost_reply_rate=1.0)
    r = k("create", "-f", "-", check=False, stdin=cm_manifest("k2"))
    assert r.returncode != 0 and "unable to return a response" in r.stderr, r.stderr
    assert "k2" in names(api)  # kubectl saw an error; the API committed it
    with proxy.paused():
        assert "k2" in k("get", "configmap", "k2").stdout
        assert "deleted" in k("delete", "configmap", "k2").stdout
    assert proxy.counts["error_500"] == 1 and proxy.counts["lost_reply"] == 1


def test_kubernetes_python_client_through_the_proxy(api: EmulatorServer, start_proxy, tmp_path: Path) -> None:
    proxy = start_proxy(Faults(seed=6, error_rate=1.0, error_codes=(409,)))
    v1 = client.CoreV1Api(config.new_client_from_config(str(proxy.write_kubeconfig(tmp_path / "kc"))))
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_config_map("default", {"metadata": {"name": "py"}})
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "Conflict"
    assert "py" not in names(api)
    proxy.configure(error_rate=0.0, watch_cut_rate=1.0, watch_cut_events=(2, 4), watch_abort_share=0.0)
    start_rv = v1.list_namespaced_config_map("default").metadata.resource_version
    for i in range(12):
        v1.create_namespaced_config_map("default", {"metadata": {"name": f"py{i}"}})
    seen = []
    w = watch.Watch()
    # The client re-watches by itself from the last version when a stream ends (no timeout_seconds given).
    for event in w.stream(v1.list_namespaced_config_map, "default", resource_version=start_rv):
        seen.append(event["object"].metadata.name)
        if len(seen) == 12:
            w.stop()
    assert seen == [f"py{i}" for i in range(12)]
    assert proxy.counts["watch_cut"] >= 3 and proxy.counts["error_409"] == 1


KOPF_OPERATOR = '''
import kopf

@kopf.on.startup()
def configure(settings, **_):
    settings.watching.server_timeout = 30
    settings.networking.error_backoffs = [0.5, 1, 2]
    settings.persistence.finalizer = "faults.test/finalizer"

@kopf.on.create("configmaps", labels={"faults-test": "yes"})
def seen(body, patch, **_):
    patch.setdefault("data", {})["seen"] = body["metadata"]["name"]
'''


def test_kopf_watches_through_cut_streams(api: EmulatorServer, start_proxy, tmp_path: Path) -> None:
    """kopf's own watch requests (``?watch=true``, chunked, resumed by resourceVersion) through the proxy while
    it cuts streams both ways and delays requests: every object is still handled."""
    import os
    import subprocess
    import sys

    from tests.conftest import wait_for

    proxy = start_proxy(Faults(seed=8, latency_rate=0.3, latency=(0.01, 0.1), watch_cut_rate=1.0,
                               watch_cut_events=(1, 3), watch_cut_seconds=(0.5, 2.0), only=r"/configmaps"))
    script = tmp_path / "op.py"
    script.write_text(KOPF_OPERATOR)
    log = (tmp_path / "kopf.log").open("w")
    env = dict(os.environ, KUBECONFIG=str(proxy.write_kubeconfig(tmp_path / "kc")))
    proc = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", "default",
                             str(script)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: proxy.traffic.get("watches", 0) >= 1, 60, what="kopf to start watching")
        for i in range(12):
            code, _, body = request(api.url, "POST", CM, {"metadata": {"name": f"k{i}",
                                                                       "labels": {"faults-test": "yes"}}})
            assert code == 201, body
        assert api.emulator is not None

        def handled() -> int:
            return sum((o.get("data") or {}).get("seen") == o["metadata"]["name"]
                       for o in api.emulator.list("", "configmaps", "default"))  # type: ignore[union-attr]

        wait_for(lambda: handled() == 12, 120, what="kopf to handle every ConfigMap through the cut watches")
        assert proc.poll() is None, (tmp_path / "kopf.log").read_text()[-3000:]
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    cuts = [i.detail for i in proxy.injections if i.fault == "watch_cut"]
    assert proxy.counts["watch_cut"] >= 3 and any("dropped" in c for c in cuts) and any("ended" in c for c in cuts)
    assert proxy.traffic["watches"] > proxy.counts["watch_cut"]  # kopf watched again after every cut
    assert "Traceback" not in (tmp_path / "kopf.log").read_text()
