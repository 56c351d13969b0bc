"""A real local Ray (CPU only) with Serve on 127.0.0.1, started once per test module."""

from __future__ import annotations

import os

from tests.harness.ports import free_port


class LocalServe:
    def __init__(self, num_cpus: int = 2) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # Ray starts its workers at nice 15: on a machine busy with other work (CI, under-load) the
        # replicas then get almost no CPU and serve.run waits past any timeout. The tests' workers run
        # at the test's own priority.
        os.environ.setdefault("RAY_worker_niceness", "0")
        import ray
        from ray import serve

        self.ray, self.serve = ray, serve
        self.port = free_port()
        self.metrics_port = free_port()
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 _metrics_export_port=self.metrics_port)
        serve.start(http_options={"host": "127.0.0.1", "port": self.port})
        self.url = f"http://127.0.0.1:{self.port}"

    def replicas(self, app: str) -> dict[str, int]:
        deps = self.serve.status().applications[app].deployments
        return {name: d.replica_states.get("RUNNING", 0) for name, d in deps.items()}

    def close(self) -> None:
        self.serve.shutdown()
        self.ray.shutdown()
