"""Metric updates from the controller, never fatal: a metrics failure is logged, the lifecycle goes on.

(The metric objects live in ``observe/metrics.py``; this module only guards how the controller calls them.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gensched.observe import metrics

log = logging.getLogger(__name__)


def safe(update: Callable[[], object], what: str) -> None:
    try:
        update()
    except Exception as exc:
        log.warning("metric %s not updated: %s", what, exc)


def carbon_saving(grams: float) -> None:
    """Measured saving at a job's end; a negative saving (the grid got dirtier) is not a counter decrement."""
    fn = getattr(metrics, "record_carbon_saving", None)
    if fn is not None:
        safe(lambda: fn(grams), "carbon saving")
    elif grams > 0:
        safe(lambda: metrics.CARBON_SAVED.inc(grams), "carbon saving")


def cluster(allocated: int, total: int, fragmentation: float, nodes: int) -> None:
    safe(lambda: metrics.update_cluster(allocated, total, fragmentation, nodes), "cluster")


def decision(reason: str) -> None:
    safe(lambda: metrics.DECISIONS.labels(decision=reason).inc(), "decisions")


def call(name: str, *args: object, **kw: object) -> None:
    """Call ``metrics.<name>(...)`` if it exists (metrics added by newer modules), guarded."""
    fn = getattr(metrics, name, None)
    if fn is not None:
        safe(lambda: fn(*args, **kw), name)
