"""Entry point of ``gensched run``: kopf's real loop plus metrics and a liveness probe."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import kopf

from gensched.observe import metrics


@dataclass(frozen=True)
class WebhookOptions:
    """Validating admission webhook served by kopf (port 0: off)."""

    port: int = 0
    addr: str = "0.0.0.0"
    host: str | None = None
    insecure: bool = False
    certfile: str | None = None
    pkeyfile: str | None = None
    cafile: str | None = None

    def export(self) -> None:
        """Hand the options to the startup handler, which configures kopf's settings."""
        if not self.port:
            return
        os.environ.update({"GENSCHED_WEBHOOK_PORT": str(self.port), "GENSCHED_WEBHOOK_ADDR": self.addr,
                           "GENSCHED_WEBHOOK_HOST": self.host or "", "GENSCHED_WEBHOOK_INSECURE": "1" if self.insecure
                           else "", "GENSCHED_WEBHOOK_CERTFILE": self.certfile or "",
                           "GENSCHED_WEBHOOK_PKEYFILE": self.pkeyfile or "",
                           "GENSCHED_WEBHOOK_CAFILE": self.cafile or ""})


def run_operator(
    namespaces: list[str], standalone: bool, liveness: str, metrics_port: int, verbose: bool,
    webhook: WebhookOptions | None = None,
) -> int:
    (webhook or WebhookOptions()).export()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import gensched.controller.handlers  # noqa: F401  (registers the handlers)

    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # one line per watch event otherwise

    metrics.serve(metrics_port)
    kopf.run(
        standalone=standalone,
        clusterwide=not namespaces,
        namespaces=namespaces or [],
        liveness_endpoint=liveness or None,
    )
    return 0
