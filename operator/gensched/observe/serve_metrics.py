"""Per-deployment serving load from Prometheus (prometheus-api-client), in Ray Serve's own metric
names as exported by Ray's metrics agent (labels ``application`` and ``deployment``)."""

from __future__ import annotations

from prometheus_api_client import PrometheusConnect

from gensched.autoscale.policy import Observation


class MetricsUnavailable(RuntimeError):
    """Prometheus could not be asked or had no data; the autoscaler keeps the current replicas."""


QUERIES = {
    "rate": 'sum by (deployment) (rate(ray_serve_deployment_request_counter_total{{application="{app}"}}[{w}]))',
    "running": 'sum by (deployment) (ray_serve_replica_processing_queries{{application="{app}"}})',
    "queued": 'sum by (deployment) (ray_serve_deployment_queued_queries{{application="{app}"}})',
    "p99": 'histogram_quantile(0.99, sum by (deployment, le) '
           '(rate(ray_serve_deployment_processing_latency_ms_bucket{{application="{app}"}}[{w}])))',
}


def _by_deployment(result: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for series in result:
        name = series.get("metric", {}).get("deployment")
        try:
            value = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if name is not None and value == value:  # drop NaN (no traffic in the window)
            out[name] = value
    return out


def observe(url: str, app: str, deployments: list[str], window: str = "1m", timeout: float = 5.0
            ) -> dict[str, Observation]:
    try:
        prom = PrometheusConnect(url=url, disable_ssl=True, timeout=int(max(1, timeout)))
        got = {k: _by_deployment(prom.custom_query(q.format(app=app, w=window))) for k, q in QUERIES.items()}
    except Exception as exc:  # connection errors, HTTP errors, bad answers: all mean "no data"
        raise MetricsUnavailable(f"Prometheus at {url} did not answer ({exc.__class__.__name__}: {exc})") from exc
    if not got["running"] and not got["rate"]:
        raise MetricsUnavailable(f"Prometheus at {url} has no Ray Serve metrics for application {app!r} yet: "
                                 "check that it scrapes the Ray metrics port")
    out = {}
    for d in deployments:
        running, queued = got["running"].get(d), got["queued"].get(d, 0.0)
        out[d] = Observation(rate_rps=got["rate"].get(d), ongoing=None if running is None else running + queued,
                             p99_ms=got["p99"].get(d))
    return out
