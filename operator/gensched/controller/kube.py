"""Thin wrapper over the official kubernetes client: the only module that calls the API."""

from __future__ import annotations

from functools import cache

import kubernetes
from kubernetes.client.rest import ApiException

from gensched import GROUP, VERSION

__all__ = ["ApiException", "Kube", "kube"]


class Kube:
    def __init__(self) -> None:
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        client = kubernetes.client.ApiClient()
        self.core = kubernetes.client.CoreV1Api(client)
        self.batch = kubernetes.client.BatchV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)

    # -- nodes and jobs (cluster picture)
    def list_nodes(self) -> list[dict]:
        return [self.core.api_client.sanitize_for_serialization(n) for n in self.core.list_node().items]

    def list_owned_jobs(self) -> list[dict]:
        jobs = self.batch.list_job_for_all_namespaces(label_selector="app.kubernetes.io/managed-by=gensched")
        return [self.batch.api_client.sanitize_for_serialization(j) for j in jobs.items]

    def list_owned_rayservices(self) -> list[dict]:
        try:
            return self.custom.list_cluster_custom_object(
                "ray.io", "v1", "rayservices", label_selector="app.kubernetes.io/managed-by=gensched").get("items", [])
        except ApiException as exc:
            if exc.status == 404:  # KubeRay not installed
                return []
            raise

    def get_job(self, namespace: str, name: str) -> dict | None:
        try:
            job = self.batch.read_namespaced_job(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self.batch.api_client.sanitize_for_serialization(job)

    def create_job(self, namespace: str, body: dict) -> None:
        self.batch.create_namespaced_job(namespace, body)

    def patch_job(self, namespace: str, name: str, patch: dict) -> None:
        self.batch.patch_namespaced_job(name, namespace, patch)

    # -- gensched objects
    def list_policies(self) -> list[dict]:
        return self.custom.list_cluster_custom_object(GROUP, VERSION, "schedulingpolicies").get("items", [])

    def get_generativejob(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "generativejobs", name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_generativejobs(self) -> list[dict]:
        return self.custom.list_cluster_custom_object(GROUP, VERSION, "generativejobs").get("items", [])

    def patch_generativejob_status(self, namespace: str, name: str, status: dict,
                                   resource_version: str | None = None) -> None:
        """Merge ``status`` in; with ``resource_version``, only if the object is still at that version
        (else ApiException 409)."""
        body: dict = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "generativejobs", name, body)

    def read_secret(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, decoded; None when the Secret or key is missing."""
        import base64

        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status in (403, 404):
                return None
            raise
        raw = (secret.data or {}).get(key)
        return base64.b64decode(raw).decode() if raw else None

    def read_configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's data; None when it does not exist (or the operator may not read it)."""
        try:
            cm = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status in (403, 404):
                return None
            raise
        return dict(cm.data or {})

    # -- serving
    def get_rayservice(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_rayservice(self, namespace: str, name: str, patch: dict) -> None:
        self.custom.patch_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", name, patch)

    def create_rayservice(self, namespace: str, body: dict) -> None:
        self.custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", body)


@cache
def kube() -> Kube:
    """One client per process, configured on first use (in-cluster, else kubeconfig)."""
    return Kube()
