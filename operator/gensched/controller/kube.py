"""Thin wrapper over the official kubernetes client: the only module that calls the API."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from functools import cache

import kubernetes
from kubernetes.client.rest import ApiException

from gensched import GROUP, VERSION

__all__ = ["ApiException", "Kube", "kube", "outcome_unknown"]

TIMEOUT = float(os.environ.get("GENSCHED_API_TIMEOUT_SECONDS", "10"))  # connect and read, every call


def _body(resp: object) -> dict:
    """The JSON of a reply asked for with ``_preload_content=False``, as plain dicts.

    The typed client turns every reply into its model classes and ``sanitize_for_serialization`` turns them
    back into dicts: most of the CPU of a LIST of thousands of Jobs or Pods, and of every Job write. The raw
    JSON is also exactly what the watches deliver, so cached objects have one shape whichever way they came.
    Non-2xx replies still raise ApiException (the client checks the status before handing the body over).
    """
    try:
        return json.loads(resp.data)  # type: ignore[attr-defined]
    finally:
        resp.release_conn()  # type: ignore[attr-defined]


def outcome_unknown(exc: BaseException) -> bool:
    """A write whose effect is unknown (timeout, lost reply, 5xx): read back before concluding anything."""
    if isinstance(exc, ApiException):
        return exc.status in (0, 500, 502, 503, 504) or exc.status is None
    return True  # connection reset, timeout, ...


class Kube:
    def __init__(self) -> None:
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        client = kubernetes.client.ApiClient()
        client.configuration.retries = 0  # the loop retries at the level of decisions, not requests
        self.core = kubernetes.client.CoreV1Api(client)
        self.batch = kubernetes.client.BatchV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.coord = kubernetes.client.CoordinationV1Api(client)
        self.sched = kubernetes.client.SchedulingV1Api(client)
        self.t = TIMEOUT

    # -- everything the caches list (startup and resync)
    def list_pods(self) -> list[dict]:
        """Pods bound to a node (any owner: foreign GPU pods count in the cluster picture)."""
        pods = _body(self.core.list_pod_for_all_namespaces(field_selector="spec.nodeName!=", _request_timeout=self.t,
                                                           _preload_content=False))
        return [p for p in pods.get("items") or [] if (p.get("spec") or {}).get("nodeName")]

    def list_priorityclasses(self) -> list[dict]:
        return _body(self.sched.list_priority_class(_request_timeout=self.t, _preload_content=False)).get("items") or []

    def create_event(self, namespace: str, body: dict) -> None:
        _body(self.core.create_namespaced_event(namespace, body, _request_timeout=self.t, _preload_content=False))

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background",
                                             _request_timeout=self.t)
        except ApiException as exc:
            if exc.status != 404:
                raise

    # -- leases (leader election)
    def get_lease(self, namespace: str, name: str) -> dict | None:
        try:
            return _body(self.coord.read_namespaced_lease(name, namespace, _request_timeout=self.t,
                                                          _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_lease(self, namespace: str, body: dict) -> dict:
        return _body(self.coord.create_namespaced_lease(namespace, body, _request_timeout=self.t,
                                                        _preload_content=False))

    def replace_lease(self, namespace: str, name: str, body: dict) -> dict:
        """Replace with the body's resourceVersion as precondition (409 when someone else wrote first)."""
        return _body(self.coord.replace_namespaced_lease(name, namespace, body, _request_timeout=self.t,
                                                         _preload_content=False))

    @staticmethod
    def micro_time(t: datetime) -> str:
        return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    # -- nodes and jobs (cluster picture)
    def list_nodes(self) -> list[dict]:
        return _body(self.core.list_node(_request_timeout=self.t, _preload_content=False)).get("items") or []

    def list_owned_jobs(self) -> list[dict]:
        return _body(self.batch.list_job_for_all_namespaces(label_selector="app.kubernetes.io/managed-by=gensched",
                                                            _request_timeout=self.t, _preload_content=False)
                     ).get("items") or []

    def list_owned_rayservices(self) -> list[dict]:
        try:
            return self.custom.list_cluster_custom_object(
                "ray.io", "v1", "rayservices", label_selector="app.kubernetes.io/managed-by=gensched",
                _request_timeout=self.t).get("items", [])
        except ApiException as exc:
            if exc.status == 404:  # KubeRay not installed
                return []
            raise

    def get_job(self, namespace: str, name: str) -> dict | None:
        try:
            return _body(self.batch.read_namespaced_job(name, namespace, _request_timeout=self.t,
                                                        _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_job(self, namespace: str, body: dict) -> dict:
        return _body(self.batch.create_namespaced_job(namespace, body, _request_timeout=self.t,
                                                      _preload_content=False))

    def patch_job(self, namespace: str, name: str, patch: dict) -> dict:
        return _body(self.batch.patch_namespaced_job(name, namespace, patch, _request_timeout=self.t,
                                                     _preload_content=False))

    # -- gensched objects
    def list_policies(self) -> list[dict]:
        return self.custom.list_cluster_custom_object(GROUP, VERSION, "schedulingpolicies",
                                                      _request_timeout=self.t).get("items", [])

    def get_generativejob(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "generativejobs", name,
                                                           _request_timeout=self.t)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_generativejobs(self) -> list[dict]:
        return self.custom.list_cluster_custom_object(GROUP, VERSION, "generativejobs",
                                                      _request_timeout=self.t).get("items", [])

    def patch_generativejob_status(self, namespace: str, name: str, status: dict,
                                   resource_version: str | None = None) -> dict:
        """Merge ``status`` in; with ``resource_version``, only if the object is still at that version
        (else ApiException 409)."""
        body: dict = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "generativejobs", name,
                                                                 body, _request_timeout=self.t)

    def patch_policy_status(self, name: str, status: dict, resource_version: str | None = None) -> dict:
        """Merge ``status`` into a SchedulingPolicy's status subresource (409 when ``resource_version`` is stale)."""
        body: dict = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return self.custom.patch_cluster_custom_object_status(GROUP, VERSION, "schedulingpolicies", name, body,
                                                              _request_timeout=self.t)

    def read_secret(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, decoded; None when the Secret or key is missing."""
        import base64

        try:
            secret = self.core.read_namespaced_secret(name, namespace, _request_timeout=self.t)
        except ApiException as exc:
            if exc.status in (403, 404):
                return None
            raise
        raw = (secret.data or {}).get(key)
        return base64.b64decode(raw).decode() if raw else None

    def read_configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's data; None when it does not exist (or the operator may not read it)."""
        try:
            cm = self.core.read_namespaced_config_map(name, namespace, _request_timeout=self.t)
        except ApiException as exc:
            if exc.status in (403, 404):
                return None
            raise
        return dict(cm.data or {})

    # -- serving
    def get_rayservice(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", name,
                                                           _request_timeout=self.t)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_rayservice(self, namespace: str, name: str, patch: dict) -> dict:
        return self.custom.patch_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", name, patch,
                                                          _request_timeout=self.t)

    def create_rayservice(self, namespace: str, body: dict) -> dict:
        return self.custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", body,
                                                           _request_timeout=self.t)


@cache
def kube() -> Kube:
    """One client per process, configured on first use (in-cluster, else kubeconfig)."""
    return Kube()
