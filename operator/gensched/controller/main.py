"""Entry point of ``gensched run``: kopf's real loop plus metrics and a liveness probe."""

from __future__ import annotations

import logging

import kopf

from gensched.observe import metrics


def run_operator(
    namespaces: list[str], standalone: bool, liveness: str, metrics_port: int, verbose: bool
) -> int:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import gensched.controller.handlers  # noqa: F401  (registers the handlers)

    metrics.serve(metrics_port)
    kopf.run(
        standalone=standalone,
        clusterwide=not namespaces,
        namespaces=namespaces or [],
        liveness_endpoint=liveness or None,
    )
    return 0
