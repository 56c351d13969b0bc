"""Leader election on a coordination.k8s.io/v1 Lease: only the holder reconciles and writes.

Every replica tries to take or renew the Lease every ``retry`` seconds. A replica takes it only when
the holder has not renewed it for ``duration`` seconds by the taker's own clock (renewTime is never
compared across clocks: the taker times how long it has seen the same renewTime). The holder stops
writing ``margin`` seconds before that can happen: it may write only while its last successful renew is
younger than ``duration - margin``, and ``margin`` covers one API call's timeout, so a write in flight
when leadership lapses still lands before anyone else may start. Standbys keep warm caches.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime

from gensched.api.errors import bounded
from gensched.controller.kube import ApiException, kube

log = logging.getLogger(__name__)


class LeaderElector:
    def __init__(self, namespace: str, name: str = "gensched-leader", identity: str | None = None,
                 duration: float = 10.0, retry: float = 2.0, margin: float | None = None,
                 enabled: bool = True) -> None:
        self.namespace, self.name = namespace, name
        pod = os.environ.get("GENSCHED_POD_NAME") or socket.gethostname()
        self.identity = identity or f"{pod}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.duration, self.retry = duration, retry
        self.margin = margin if margin is not None else min(duration / 2, kube_timeout() + 1.0)
        self.enabled = enabled
        self._renewed = -1e18  # monotonic time of our last successful acquire/renew
        self._seen: tuple[str | None, str | None] = (None, None)  # (holder, renewTime) last observed
        self._seen_at = time.monotonic()
        self._stop = threading.Event()
        self.transitions = 0
        self.on_change: list = []
        self._was_leader = False

    # -- what the loop asks
    def is_leader(self) -> bool:
        if not self.enabled:
            return True
        return time.monotonic() - self._renewed < self.duration - self.margin

    def may_write(self) -> bool:
        return self.is_leader()

    # -- the election loop
    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.try_once()
            except Exception as exc:  # API down: we simply do not renew, and stop writing in time
                log.warning("lease %s/%s: %s", self.namespace, self.name, bounded(exc, 300))
            now_leader = self.is_leader()
            if now_leader != self._was_leader:
                self._was_leader = now_leader
                log.info("leadership %s: %s", "acquired" if now_leader else "lost", self.identity)
                for cb in self.on_change:
                    cb(now_leader)
            self._stop.wait(self.retry)

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        if release and self.is_leader():
            try:
                lease = kube().get_lease(self.namespace, self.name)
                if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                    lease["spec"]["leaseDurationSeconds"] = 1
                    lease["spec"]["holderIdentity"] = None
                    kube().replace_lease(self.namespace, self.name, lease)
            except Exception as exc:
                log.info("lease not released on stop: %s", bounded(exc, 200))
        self._renewed = -1e18

    def try_once(self) -> bool:
        started = time.monotonic()
        k = kube()
        now = datetime.now(UTC)
        lease = k.get_lease(self.namespace, self.name)
        spec_new = {"holderIdentity": self.identity, "leaseDurationSeconds": round(self.duration),
                    "renewTime": k.micro_time(now)}
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {**spec_new, "acquireTime": k.micro_time(now), "leaseTransitions": 0}}
            try:
                k.create_lease(self.namespace, body)
            except ApiException as exc:
                if exc.status == 409:
                    return False
                raise
            self._renewed = started
            self.transitions += 1
            return True
        spec = lease.get("spec") or {}
        holder, renew = spec.get("holderIdentity"), spec.get("renewTime")
        if (holder, renew) != self._seen:
            self._seen, self._seen_at = (holder, renew), time.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or self.duration)
        mine = holder == self.identity
        expired = not holder or time.monotonic() - self._seen_at >= duration
        if not mine and not expired:
            return False
        new_spec = dict(spec, **spec_new)
        if not mine:
            new_spec["acquireTime"] = k.micro_time(now)
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        lease["spec"] = new_spec
        try:
            k.replace_lease(self.namespace, self.name, lease)  # resourceVersion in the body: 409 if raced
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        self._renewed = started
        if not mine:
            self.transitions += 1
        return True


def kube_timeout() -> float:
    from gensched.controller.kube import TIMEOUT

    return TIMEOUT
