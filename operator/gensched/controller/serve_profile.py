"""Per-operator sizing from the job's measured profile (``spec.serve.profile``, a ConfigMap).

Reads the profiler's JSON from the ConfigMap and turns it into what one replica of each deployed
operator is sized for (``autoscale.targets``). Every problem is a ProfileError whose message names
the ConfigMap, key or operator and the fix, so the caller can put it in a condition.
"""

from __future__ import annotations

from gensched.api import GenerativeJobSpec
from gensched.autoscale.profiles import ModelProfile, ProfileError
from gensched.autoscale.rayservice import INGRESS
from gensched.autoscale.targets import OperatorTarget, operator_targets
from gensched.controller.kube import kube


def deployment_shares(deployments: list[dict]) -> dict[str, float]:
    """GPU share per replica of each model-operator deployment (the ingress is not an operator)."""
    return {d["name"]: float((d.get("ray_actor_options") or {}).get("num_gpus", 0) or 0)
            for d in deployments if d.get("name") != INGRESS}


def targets(namespace: str, spec: GenerativeJobSpec, deployments: list[dict]) -> dict[str, OperatorTarget] | None:
    """Targets from the job's profile; None when the job names no profile."""
    assert spec.serve is not None
    ref = spec.serve.profile
    if ref is None:
        return None
    data = kube().read_configmap(namespace, ref.config_map)
    if data is None:
        raise ProfileError(f"ConfigMap {namespace}/{ref.config_map} (spec.serve.profile.configMap) does not exist: "
                           f"create it with `kubectl -n {namespace} create configmap {ref.config_map} "
                           f"--from-file={ref.key}=profile.json`")
    if ref.key not in data:
        raise ProfileError(f"ConfigMap {namespace}/{ref.config_map} has no key {ref.key!r} "
                           f"(spec.serve.profile.key); it has {sorted(data)}")
    shares = deployment_shares(deployments)
    where = f"ConfigMap {namespace}/{ref.config_map} key {ref.key}"
    profile = ModelProfile.from_json(data[ref.key], expect=list(shares), where=where)
    return operator_targets(profile, shares, spec.serve.slo.tbt_ms, ref.context_tokens)
