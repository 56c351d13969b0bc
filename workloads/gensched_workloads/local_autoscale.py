"""Local development mode: the operator's per-operator autoscaling loop driving a local Ray Serve
application directly (no Kubernetes). Same decision code (``gensched.autoscale.policy``), same
Prometheus queries (``gensched.observe.serve_metrics``); changes are applied with ``serve.run``.

    python -m gensched_workloads.local_autoscale --prometheus http://127.0.0.1:9090 --app lm \\
        --args app.json --interval 5
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gensched.autoscale.policy import Change, Limits, OperatorState, Settings, decide
from gensched.observe.serve_metrics import MetricsUnavailable, observe

log = logging.getLogger("gensched.local_autoscale")


@dataclass
class LocalAutoscaler:
    prometheus: str
    app: str
    args: dict[str, Any]
    limits: Limits
    settings: Settings
    states: dict[str, OperatorState] = field(default_factory=dict)
    history: list[tuple[float, list[Change]]] = field(default_factory=list)

    def replicas(self) -> dict[str, int]:
        wanted = self.args.get("replicas") or {}
        return {o["name"]: int(wanted.get(o["name"], 1)) for o in self.args["operators"]}

    def step(self, now: float | None = None) -> list[Change]:
        """One pass: observe, decide, apply. Missing metrics change nothing."""
        from ray import serve

        from gensched_workloads.serve_app import build_app

        now = time.monotonic() if now is None else now
        current = self.replicas()
        try:
            observed = observe(self.prometheus, self.app, list(current), window="15s")
        except MetricsUnavailable as exc:
            log.warning("keeping replicas %s: %s", current, exc)
            return []
        changes = decide(now, current, observed, dict.fromkeys(current, self.limits), self.states, self.settings)
        if changes:
            self.args = {**self.args, "replicas": {**current, **{c.name: c.new for c in changes}}}
            serve.run(build_app(self.args), name=self.app, route_prefix="/")
            for c in changes:
                log.info("scaled %s %d -> %d: %s", c.name, c.old, c.new, c.reason)
        self.history.append((now, changes))
        return changes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--app", default="lm")
    ap.add_argument("--args", required=True, help="JSON file with build_app arguments (operators, uri ...)")
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--min-replicas", type=int, default=1)
    ap.add_argument("--max-replicas", type=int, default=4)
    ap.add_argument("--target-ongoing", type=float, default=2.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import ray
    from ray import serve

    from gensched_workloads.serve_app import build_app

    ray.init(ignore_reinit_error=True)
    app_args = json.loads(Path(args.args).read_text())
    serve.run(build_app(app_args), name=args.app, route_prefix="/")
    loop = LocalAutoscaler(args.prometheus, args.app, app_args,
                           Limits(args.min_replicas, args.max_replicas, args.target_ongoing),
                           Settings(cooldown_s=args.interval * 2, stabilization_s=args.interval * 12))
    while True:
        loop.step()
        time.sleep(args.interval)


if __name__ == "__main__":
    raise SystemExit(main())
