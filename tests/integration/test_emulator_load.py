"""The API emulator under load: many watches (some cut mid-stream, some never read) and writers in threads.

Every load test measures the harness first: if the emulator wedges, the operator looks stuck. These tests
assert invariants only (every write completes, every watcher sees every event it selects exactly once and
in resourceVersion order), within a generous bound that says "did not hang", never how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import random
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from tests.harness.server import EmulatorServer

pytestmark = pytest.mark.integration

BOUND = 120.0  # seconds: "it did not hang", not a speed
NAMESPACES = ("load-0", "load-1")
WRITERS = 4
OBJECTS_PER_WRITER = 60


@dataclass
class Write:
    rv: int
    type: str
    namespace: str
    name: str
    writer: int


@dataclass
class Watcher:
    """One watch client and what it saw; ``flaky`` ones hang up after a few events and resume."""

    path: str
    wants: object  # callable(Write) -> bool
    flaky: bool = False
    seen: list[tuple[int, str, str]] = field(default_factory=list)  # (rv, type, name)
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)


def _writer(url: str, writer: int, out: list[Write]) -> None:
    """Create, patch twice and delete ConfigMaps over one keep-alive connection; record each resulting rv."""
    host = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=BOUND)

    def call(method: str, path: str, body: object, ctype: str = "application/json") -> dict:
        conn.request(method, path, json.dumps(body), {"Content-Type": ctype})
        resp = conn.getresponse()
        data = json.loads(resp.read())
        assert resp.status in (200, 201), (method, path, resp.status, data)
        return data

    rng = random.Random(writer)
    for i in range(OBJECTS_PER_WRITER):
        ns = NAMESPACES[(writer + i) % 2]
        name = f"w{writer}-{i}"
        base = f"/api/v1/namespaces/{ns}/configmaps"
        obj = call("POST", base, {"metadata": {"name": name, "labels": {"writer": str(writer)}}, "data": {"n": "0"}})
        out.append(Write(int(obj["metadata"]["resourceVersion"]), "ADDED", ns, name, writer))
        for n in (1, 2):
            obj = call("PATCH", f"{base}/{name}", {"data": {"n": str(n), "r": str(rng.random())}},
                       "application/merge-patch+json")
            out.append(Write(int(obj["metadata"]["resourceVersion"]), "MODIFIED", ns, name, writer))
        obj = call("DELETE", f"{base}/{name}", None)
        out.append(Write(int(obj["metadata"]["resourceVersion"]), "DELETED", ns, name, writer))
        time.sleep(rng.uniform(0, 0.01))  # idle moments: watchers wait, and some are cancelled while waiting
    conn.close()


async def _watch(url: str, w: Watcher, since: int, rng: random.Random) -> None:
    cursor = since
    timeout = aiohttp.ClientTimeout(total=None, sock_read=BOUND)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            budget = rng.randint(3, 40) if w.flaky else None
            sep = "&" if "?" in w.path else "?"
            async with session.get(f"{url}{w.path}{sep}watch=true&resourceVersion={cursor}") as resp:
                assert resp.status == 200, await resp.text()
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        w.errors.append(json.dumps(event["object"]))
                        return
                    meta = event["object"]["metadata"]
                    cursor = int(meta["resourceVersion"])
                    w.seen.append((cursor, event["type"], meta["name"]))
                    if meta["name"] == "sentinel":
                        return
                    if budget is not None:
                        budget -= 1
                        if budget == 0:
                            break  # hang up mid-stream, then resume from the last version seen
            w.reconnects += 1


async def _churn(url: str, rng: random.Random, stop: asyncio.Event) -> int:
    """Watches that hang up at random moments, mostly while idle, some with a short ``timeoutSeconds``: the
    pattern that wedged the old emulator (a watcher cancelled in its condition wait left the lock held)."""
    opened = 0
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            query = rng.choice(["", "&timeoutSeconds=1", "&timeoutSeconds=2"])
            async with session.get(f"{url}/api/v1/configmaps?watch=true{query}") as resp:
                assert resp.status == 200
                opened += 1

                async def drain() -> None:
                    async for _ in resp.content:
                        pass

                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(drain(), rng.uniform(0.05, 1.0))
    return opened


def _stalled_watch(url: str) -> socket.socket:
    """A watch that is opened and never read: its socket buffers fill and it must not slow anyone down."""
    host = urllib.parse.urlsplit(url)
    sock = socket.create_connection((host.hostname, host.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET /api/v1/configmaps?watch=true HTTP/1.1\r\nHost: {host.hostname}\r\n\r\n".encode())
    return sock


def test_concurrent_watches_and_writes_all_complete_in_order(api: EmulatorServer) -> None:
    url = api.url
    start_rv = int(json.loads(_get(url, "/api/v1/configmaps"))["metadata"]["resourceVersion"])
    every = lambda w: True  # noqa: E731
    watchers = [Watcher("/api/v1/configmaps", every) for _ in range(16)]
    watchers += [Watcher("/api/v1/namespaces/load-0/configmaps", lambda w: w.namespace == "load-0")
                 for _ in range(6)]
    watchers += [Watcher("/api/v1/configmaps?labelSelector=writer%3D1", lambda w: w.writer == 1) for _ in range(6)]
    watchers += [Watcher("/api/v1/configmaps", every, flaky=True) for _ in range(10)]
    stalled = [_stalled_watch(url) for _ in range(4)]

    loop = asyncio.new_event_loop()
    rng = random.Random(12)
    watch_done = threading.Event()

    churned: list[int] = []

    async def all_watches() -> None:
        stop = asyncio.Event()
        churn = [asyncio.create_task(_churn(url, random.Random(i), stop)) for i in range(30)]
        await asyncio.gather(*(_watch(url, w, start_rv, random.Random(rng.random())) for w in watchers))
        stop.set()
        churned.extend(await asyncio.gather(*churn))

    def run_watches() -> None:
        try:
            loop.run_until_complete(asyncio.wait_for(all_watches(), BOUND))
        finally:
            watch_done.set()

    watch_thread = threading.Thread(target=run_watches, daemon=True)
    watch_thread.start()

    writes: list[list[Write]] = [[] for _ in range(WRITERS)]
    failures: list[BaseException] = []
    reads = [0]
    all_written = threading.Event()

    def guarded(fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # reported below, with the others
            failures.append(exc)

    def reader() -> None:  # LISTs interleaved with the writes must keep answering too
        while not all_written.is_set():
            json.loads(_get(url, "/api/v1/configmaps"))
            reads[0] += 1

    # Daemon threads, so that a wedged emulator fails this test at the bound instead of hanging the run.
    threads = [threading.Thread(target=guarded, args=(_writer, url, i, writes[i]), daemon=True)
               for i in range(WRITERS)]
    rd = threading.Thread(target=guarded, args=(reader,), daemon=True)
    for t in [*threads, rd]:
        t.start()
    deadline = time.monotonic() + BOUND
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    all_written.set()
    rd.join(max(1.0, deadline - time.monotonic()))
    hung = sum(t.is_alive() for t in [*threads, rd])
    assert not hung, f"{hung} writer/reader threads did not finish within {BOUND}s: the emulator wedged"
    assert not failures, failures
    # One object every watcher selects (namespace load-0, writer=1) ends every stream.
    host = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=BOUND)
    conn.request("POST", "/api/v1/namespaces/load-0/configmaps",
                 json.dumps({"metadata": {"name": "sentinel", "labels": {"writer": "1"}}}),
                 {"Content-Type": "application/json"})
    sentinel_rv = int(json.loads(conn.getresponse().read())["metadata"]["resourceVersion"])
    assert watch_done.wait(BOUND), "watchers did not all see the final write"
    watch_thread.join(5)
    for s in stalled:
        s.close()
    emu = api.emulator
    assert emu is not None
    deadline = time.monotonic() + BOUND  # every stream closed by its client is let go (nothing leaks)
    while emu.watchers and time.monotonic() < deadline:
        time.sleep(0.2)
    assert emu.watchers == 0, f"{emu.watchers} watch streams still open after every client went away"

    done = [w for ws in writes for w in ws]
    assert len(done) == WRITERS * OBJECTS_PER_WRITER * 4
    rvs = [w.rv for w in done]
    assert len(set(rvs)) == len(rvs), "resourceVersion must be unique across all writes"
    for ws in writes:  # each writer's own writes got strictly increasing versions
        assert [w.rv for w in ws] == sorted(w.rv for w in ws)
    assert reads[0] > 0
    for w in watchers:
        assert not w.errors, w.errors
        got = [rv for rv, _, _ in w.seen]
        assert got == sorted(set(got)), f"{w.path}: events out of order or repeated"
        expected = sorted([(x.rv, x.type, x.name) for x in done if w.wants(x)] + [(sentinel_rv, "ADDED", "sentinel")])
        assert w.seen == expected, f"{w.path} (flaky={w.flaky}): missed {len(set(expected) - set(w.seen))} events"
    assert sum(w.reconnects for w in watchers if w.flaky) >= 10
    assert sum(churned) >= 30


def _get(url: str, path: str) -> bytes:
    host = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=BOUND)
    conn.request("GET", path)
    body = conn.getresponse().read()
    conn.close()
    return body


def test_a_watcher_that_never_reads_is_let_go_and_blocks_no_write() -> None:
    api = EmulatorServer(watch_write_timeout=1.0).start()
    try:
        emu = api.emulator
        assert emu is not None
        stalled = _stalled_watch(api.url)
        deadline = time.monotonic() + BOUND
        while not emu.watchers and time.monotonic() < deadline:
            time.sleep(0.05)
        assert emu.watchers == 1
        host = urllib.parse.urlsplit(api.url)
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=BOUND)
        blob = "x" * 10_000
        for i in range(600):  # ~6 MB of events: far more than the socket buffers between the two ends hold
            conn.request("POST", "/api/v1/namespaces/default/configmaps",
                         json.dumps({"metadata": {"name": f"big{i}"}, "data": {"blob": blob}}),
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 201, resp.read()
            resp.read()
        while emu.watchers and time.monotonic() < deadline:
            time.sleep(0.2)
        assert emu.watchers == 0, "a watcher that never reads kept its stream"
        stalled.settimeout(BOUND)  # a socket.timeout here would mean the stream was left open
        with contextlib.suppress(ConnectionResetError):  # dropped with a reset: queued events discarded
            while stalled.recv(1 << 20):
                pass
        stalled.close()
    finally:
        api.stop()
