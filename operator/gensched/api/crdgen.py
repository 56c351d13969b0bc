"""Render CustomResourceDefinitions from the pydantic models.

Kubernetes wants a *structural* OpenAPI v3 schema: no ``$ref``, no ``anyOf``
with null, ``exclusiveMinimum`` as a boolean, no ``additionalProperties``
next to ``properties`` (but kept on maps, or the API server prunes their keys).
This module turns pydantic's JSON Schema into that and
adds what JSON Schema cannot say (CEL rules, list-map keys, printer columns).
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from gensched import GROUP, VERSION
from gensched.api.generativejob import GenerativeJobSpec, GenerativeJobStatus
from gensched.api.policy import SchedulingPolicySpec, SchedulingPolicyStatus

_DROP = {"title", "discriminator"}


def _validations_by_def(root: type[BaseModel]) -> dict[str, list[dict[str, str]]]:
    """Collect ``x_kubernetes_validations`` of every model reachable from ``root``."""
    found: dict[str, list[dict[str, str]]] = {}
    stack: list[type[BaseModel]] = [root]
    seen: set[type[BaseModel]] = set()
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen.add(model)
        rules = model.__dict__.get("x_kubernetes_validations")
        if rules:
            found[model.__name__] = list(rules)
        for field in model.model_fields.values():
            for arg in _model_args(field.annotation):
                stack.append(arg)
    return found


def _model_args(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        out.extend(_model_args(arg))
    return out


def structural(schema: dict[str, Any], defs: dict[str, Any], rules: dict[str, list[dict[str, str]]]) -> dict:
    """Convert one JSON Schema node (recursively) into a structural OpenAPI v3 node."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        node = structural(defs[name], defs, rules)
        if name in rules:
            node["x-kubernetes-validations"] = rules[name]
        extra = {k: v for k, v in schema.items() if k not in ("$ref", *_DROP)}
        return {**node, **{k: v for k, v in extra.items() if k in ("description", "default")}}
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express union {schema['anyOf']} structurally")
        inner = structural(options[0], defs, rules)
        for key in ("description", "default"):
            if key in schema and schema[key] is not None:
                inner[key] = schema[key]
        return inner
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP:
            continue
        if key == "default" and value is None:
            continue
        if key == "properties":
            out["properties"] = {k: structural(v, defs, rules) for k, v in value.items()}
        elif key == "additionalProperties":
            _map_values(out, value, "properties" in schema, defs, rules)
        elif key == "items":
            out["items"] = structural(value, defs, rules)
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _map_values(out: dict[str, Any], value: Any, has_properties: bool, defs: dict[str, Any],
                rules: dict[str, list[dict[str, str]]]) -> None:
    """A map field (``dict[str, X]``) keeps its values' schema; without it an API server prunes every
    key. ``additionalProperties: false`` (pydantic's ``extra="forbid"``) is the structural default
    and may not be written next to ``properties``; an untyped map keeps its unknown fields."""
    if has_properties or value is False:
        return
    if value is True or value == {}:
        out["x-kubernetes-preserve-unknown-fields"] = True
    else:
        out["additionalProperties"] = structural(value, defs, rules)


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    rules = _validations_by_def(model)
    node = structural(raw, defs, rules)
    if model.__name__ in rules:
        node["x-kubernetes-validations"] = rules[model.__name__]
    return node


def _status_schema() -> dict[str, Any]:
    node = model_schema(GenerativeJobStatus)
    conds = node["properties"]["conditions"]
    conds["x-kubernetes-list-type"] = "map"
    conds["x-kubernetes-list-map-keys"] = ["type"]
    return node


def _policy_status_schema() -> dict[str, Any]:
    node = model_schema(SchedulingPolicyStatus)
    conds = node["properties"]["conditions"]
    conds["x-kubernetes-list-type"] = "map"
    conds["x-kubernetes-list-map-keys"] = ["type"]
    return node


def _crd(
    kind: str,
    plural: str,
    short: str,
    scope: str,
    spec_schema: dict,
    status_schema: dict | None,
    columns: list[dict],
    description: str,
) -> dict:
    props: dict[str, Any] = {"spec": spec_schema}
    if status_schema is not None:
        props["status"] = status_schema
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "description": description,
                "required": ["spec"],
                "properties": {
                    "apiVersion": {"type": "string", "description": "gensched.io/v1alpha1"},
                    "kind": {"type": "string", "description": "The kind of this object."},
                    "metadata": {"type": "object", "description": "Standard object metadata."},
                    **props,
                },
            }
        },
        "additionalPrinterColumns": columns,
    }
    if status_schema is not None:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "gensched"}},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["gensched"],
            },
            "scope": scope,
            "versions": [version],
        },
    }


AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def generativejob_crd() -> dict:
    return _crd(
        "GenerativeJob", "generativejobs", "gj", "Namespaced",
        model_schema(GenerativeJobSpec), _status_schema(),
        [
            {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "GPUs", "type": "number", "jsonPath": ".spec.resources.gpus"},
            {"name": "Node", "type": "string", "jsonPath": ".status.placement.node"},
            {"name": "Queue", "type": "integer", "jsonPath": ".status.queue.position"},
            {"name": "Waiting", "type": "string", "jsonPath": ".status.queue.reason"},
            {"name": "Start", "type": "date", "jsonPath": ".status.plannedStart"},
            {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
            AGE,
        ],
        "Generative AI work (batch synthesis or online serving) scheduled by gensched.",
    )


def schedulingpolicy_crd() -> dict:
    return _crd(
        "SchedulingPolicy", "schedulingpolicies", "gsp", "Cluster",
        model_schema(SchedulingPolicySpec), _policy_status_schema(),
        [
            {"name": "Default", "type": "boolean", "jsonPath": ".spec.default"},
            {"name": "Packing", "type": "string", "jsonPath": ".spec.packing.strategy"},
            {"name": "Timing", "type": "string", "jsonPath": ".spec.timing.mode"},
            {"name": "Valid", "type": "boolean", "jsonPath": ".status.valid"},
            {"name": "Carbon", "type": "boolean", "jsonPath": ".status.carbonSignal.healthy", "priority": 1},
            AGE,
        ],
        "Cluster-wide tuning of gensched packing, time shifting, autoscaling and accounting.",
    )


def crd_files() -> dict[str, str]:
    """File name -> YAML text, exactly what ``crds/`` and the chart hold."""
    header = "# Generated by `gensched crds` from operator/gensched/api. Do not edit.\n"
    return {
        "gensched.io_generativejobs.yaml": header + yaml.safe_dump(generativejob_crd(), sort_keys=False),
        "gensched.io_schedulingpolicies.yaml": header + yaml.safe_dump(schedulingpolicy_crd(), sort_keys=False),
    }
