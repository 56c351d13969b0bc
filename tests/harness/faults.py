"""A fault-injecting HTTP proxy between a client (the operator, kubectl) and the API emulator.

It forwards every request to the emulator and, at seeded random, misbehaves the way a real API server,
load balancer or network does:

- **errors on writes** (POST/PUT/PATCH/DELETE): answers 409, 429 (with ``Retry-After``), 500 or 503 as a
  Kubernetes ``Status`` *without forwarding* the write, so nothing changed;
- **lost replies**: forwards a write (it commits) but answers 504, so the client cannot know it worked;
- **latency**: delays a request before forwarding it;
- **cut watches**: ends a watch stream after a random number of events or seconds, either cleanly (the
  chunked response is finished, as when the API server's watch timeout fires) or abruptly (the connection
  is dropped mid-stream, as when a network path breaks).

Everything it injects is counted per kind of fault (``counts``) and recorded (``injections``), so a test
can say what it survived. Runs on its own thread and event loop, like :class:`EmulatorServer`::

    with FaultProxy(api.url, Faults(seed=7, error_rate=0.1, lost_reply_rate=0.05)) as proxy:
        proxy.write_kubeconfig(tmp_path / "kubeconfig-faulty")
        ...
        print(proxy.report())
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import aiohttp.web
import yaml

from tests.harness.ports import free_port

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ERROR_CODES = (409, 429, 500, 503)
FAULT_KINDS = ("error_409", "error_429", "error_500", "error_503", "lost_reply", "latency", "watch_cut")
_HOP_BY_HOP = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                         "proxy-authorization", "proxy-authenticate", "content-length"})
_STATUS = {
    409: ("Conflict", "Operation cannot be fulfilled: the object has been modified; please apply your changes "
                      "to the latest version and try again"),
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: etcdserver: request timed out"),
    503: ("ServiceUnavailable", "The server is currently unable to handle the request"),
    504: ("Timeout", "The server was unable to return a response in the time allotted, but may still be "
                     "processing the request"),
}


def _range(name: str, value: tuple[float, float], low: float) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1]:
        raise ValueError(f"Faults.{name} must be (lo, hi) with {low} <= lo <= hi, got {value!r}")


@dataclass(frozen=True)
class Faults:
    """The proxy's knobs. Rates are probabilities per eligible request; ranges are uniform (lo, hi)."""

    seed: int = 0
    error_rate: float = 0.0  # a write is answered with one of error_codes and not forwarded
    error_codes: tuple[int, ...] = ERROR_CODES
    lost_reply_rate: float = 0.0  # a write is forwarded (and commits) but answered 504
    latency_rate: float = 0.0  # a request waits latency seconds before it is forwarded
    latency: tuple[float, float] = (0.01, 0.3)
    watch_cut_rate: float = 0.0  # a watch stream is cut after watch_cut_events events or watch_cut_seconds
    watch_cut_events: tuple[int, int] = (1, 20)
    watch_cut_seconds: tuple[float, float] = (0.5, 5.0)
    watch_abort_share: float = 0.5  # of the cuts, the share that drops the connection instead of ending cleanly
    retry_after: int = 1  # seconds, in the Retry-After header of an injected 429
    only: str | None = None  # a regex: only requests whose path matches are eligible for faults
    skip: str | None = None  # a regex: requests whose path matches are never faulted

    def __post_init__(self) -> None:
        for name in ("error_rate", "lost_reply_rate", "latency_rate", "watch_cut_rate", "watch_abort_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Faults.{name} must be a probability in [0, 1], got {value!r}")
        if self.error_rate + self.lost_reply_rate > 1.0:
            raise ValueError("Faults.error_rate + Faults.lost_reply_rate must not exceed 1 (both act on writes)")
        bad = [c for c in self.error_codes if c not in ERROR_CODES]
        if bad or not self.error_codes:
            raise ValueError(f"Faults.error_codes must be a non-empty subset of {ERROR_CODES}, got "
                             f"{self.error_codes!r}")
        _range("latency", self.latency, 0.0)
        _range("watch_cut_events", self.watch_cut_events, 1)
        _range("watch_cut_seconds", self.watch_cut_seconds, 0.0)
        if self.retry_after < 0:
            raise ValueError(f"Faults.retry_after must be >= 0 seconds, got {self.retry_after!r}")
        for name in ("only", "skip"):
            if getattr(self, name) is not None:
                try:
                    re.compile(getattr(self, name))
                except re.error as exc:
                    raise ValueError(f"Faults.{name} is not a valid regex: {exc}") from None


@dataclass
class Injection:
    """One injected fault; for a lost reply, the object the write committed."""

    fault: str  # one of FAULT_KINDS
    method: str
    path: str
    at: float = field(default_factory=time.time)
    detail: str = ""
    name: str | None = None
    resource_version: str | None = None
    upstream_status: int | None = None


def status_body(code: int, path: str) -> dict:
    reason, message = _STATUS[code]
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": code,
            "reason": reason, "message": f"{message} (injected by the fault proxy on {path})", "details": {}}
    if code == 429:
        body["details"]["retryAfterSeconds"] = 1
    return body


class FaultProxy:
    """An asyncio HTTP proxy in front of ``upstream`` (the emulator's URL) that injects :class:`Faults`."""

    def __init__(self, upstream: str, faults: Faults | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = faults or Faults()
        self.rng = random.Random(self.faults.seed)
        self.url = ""
        self.enabled = True
        self.injections: deque[Injection] = deque(maxlen=100_000)
        self._counts: Counter[str] = Counter()
        self._traffic: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)

    # -- lifecycle
    def start(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError("fault proxy failed to start") from self._error
        if not self.url:
            raise RuntimeError("fault proxy did not start within 30 s")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=0)  # watches hold connections: no pool limit
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                         skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
                                         ) as self._session:
            server = aiohttp.web.Server(self._handle, handler_cancellation=True)
            runner = aiohttp.web.ServerRunner(server)
            await runner.setup()
            for attempt in range(20):
                port = free_port()
                try:
                    await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
                    break
                except OSError:
                    if attempt == 19:
                        raise
            self.url = f"http://127.0.0.1:{port}"
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

    # -- knobs and counts (safe to call from the test's thread)
    def configure(self, **changes: object) -> Faults:
        """Change knobs while running, e.g. ``proxy.configure(error_rate=0.2)``; the RNG keeps its state."""
        self.faults = dataclasses.replace(self.faults, **changes)  # type: ignore[arg-type]
        return self.faults

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No faults inside the block (set-up and final checks)."""
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = True

    @property
    def counts(self) -> dict[str, int]:
        """Injected faults per kind (every kind in FAULT_KINDS present, zero if none)."""
        with self._lock:
            return {k: self._counts[k] for k in FAULT_KINDS}

    @property
    def traffic(self) -> dict[str, int]:
        """What went through: requests, writes, watches, forwarded."""
        with self._lock:
            return dict(self._traffic)

    def total(self) -> int:
        return sum(self.counts.values())

    def lost_replies(self) -> list[Injection]:
        return [i for i in list(self.injections) if i.fault == "lost_reply"]

    def report(self) -> str:
        counts = self.counts
        return ", ".join(f"{k}={v}" for k, v in counts.items()) + f" (of {self.traffic.get('requests', 0)} requests)"

    def write_kubeconfig(self, path: Path) -> Path:
        cfg = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "faulty", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
            "contexts": [{"name": "faulty", "context": {"cluster": "faulty", "user": "tester",
                                                        "namespace": "default"}}],
            "current-context": "faulty",
        }
        path.write_text(yaml.safe_dump(cfg))
        return path

    def _count(self, key: str, traffic: bool = False) -> None:
        with self._lock:
            (self._traffic if traffic else self._counts)[key] += 1

    def _record(self, injection: Injection) -> None:
        self._count(injection.fault)
        self.injections.append(injection)

    # -- the proxy (runs on the proxy's loop; the RNG is only touched here, in arrival order)
    def _eligible(self, path: str) -> bool:
        f = self.faults
        if not self.enabled:
            return False
        if f.only is not None and not re.search(f.only, path):
            return False
        return not (f.skip is not None and re.search(f.skip, path))

    async def _handle(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        f = self.faults
        method, path = request.method.upper(), request.path
        body = await request.read()
        watch = method == "GET" and request.query.get("watch") in ("true", "1")
        eligible = self._eligible(path)
        self._count("requests", traffic=True)
        if method in WRITES:
            self._count("writes", traffic=True)
        if watch:
            self._count("watches", traffic=True)
        if eligible and f.latency_rate and self.rng.random() < f.latency_rate:
            delay = self.rng.uniform(*f.latency)
            self._record(Injection("latency", method, path, detail=f"{delay:.3f}s"))
            await asyncio.sleep(delay)
        lost = False
        if eligible and method in WRITES and (f.error_rate or f.lost_reply_rate):
            draw = self.rng.random()
            if draw < f.error_rate:
                code = self.rng.choice(f.error_codes)
                self._record(Injection(f"error_{code}", method, path))
                return self._status(code, path)
            lost = draw < f.error_rate + f.lost_reply_rate
        cut = None
        if watch and eligible and f.watch_cut_rate and self.rng.random() < f.watch_cut_rate:
            cut = (self.rng.randint(*f.watch_cut_events), self.rng.uniform(*f.watch_cut_seconds),
                   self.rng.random() < f.watch_abort_share)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        url = self.upstream + str(request.rel_url)
        self._count("forwarded", traffic=True)
        async with self._session.request(method, url, headers=headers, data=body or None) as upstream:
            back = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            if watch and upstream.status == 200:
                return await self._stream(request, upstream, back, cut)
            data = await upstream.read()
        if lost and upstream.status < 300:
            name = rv = None
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                meta = json.loads(data).get("metadata") or {}
                name, rv = meta.get("name"), meta.get("resourceVersion")
            self._record(Injection("lost_reply", method, path, name=name, resource_version=rv,
                                   upstream_status=upstream.status))
            return self._status(504, path)
        return aiohttp.web.Response(body=data, status=upstream.status, headers=back)

    def _status(self, code: int, path: str) -> aiohttp.web.Response:
        headers = {"Retry-After": str(self.faults.retry_after)} if code == 429 else {}
        return aiohttp.web.json_response(status_body(code, path), status=code, headers=headers)

    async def _stream(self, request: aiohttp.web.BaseRequest, upstream: aiohttp.ClientResponse,
                      headers: dict[str, str], cut: tuple[int, float, bool] | None) -> aiohttp.web.StreamResponse:
        """Forward a watch line by line (one event per line); cut it as planned."""
        resp = aiohttp.web.StreamResponse(status=upstream.status, headers=headers)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cut[1] if cut else None
        sent = 0
        try:
            while True:
                if deadline is None:
                    line = await upstream.content.readline()
                else:
                    try:
                        async with asyncio.timeout(max(0.0, deadline - loop.time())):
                            line = await upstream.content.readline()
                    except TimeoutError:
                        return await self._cut(request, resp, cut, f"after {cut[1]:.2f}s, {sent} events")
                if not line:
                    break  # the emulator ended the stream itself
                await resp.write(line)
                if line.strip():
                    sent += 1
                    if cut and sent >= cut[0]:
                        return await self._cut(request, resp, cut, f"after {sent} events")
        except (ConnectionResetError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            pass  # one side went away; the other sees the stream end
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp

    async def _cut(self, request: aiohttp.web.BaseRequest, resp: aiohttp.web.StreamResponse,
                   cut: tuple[int, float, bool] | None, when: str) -> aiohttp.web.StreamResponse:
        assert cut is not None
        abort = cut[2]
        self._record(Injection("watch_cut", request.method, request.path,
                               detail=f"{'dropped' if abort else 'ended'} {when}"))
        if abort and request.transport is not None:
            request.transport.abort()  # mid-stream, no terminating chunk: the client sees a broken stream
        else:
            with contextlib.suppress(ConnectionResetError):
                await resp.write_eof()
        return resp
