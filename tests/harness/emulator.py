"""A Kubernetes API emulator good enough for kopf's real loop and real kubectl.

Built on kmock's ``KubernetesEmulator`` (its aiohttp ``Server``, request parsing,
discovery scaffold and Status errors) with the object store replaced, because
stock kmock 0.8 breaks kopf and kubectl: objects get no resourceVersion, uid or
creationTimestamp; LISTs lack kind/apiVersion; WATCH ignores resourceVersion
and replays everything as ADDED; watch streams are served as octet-stream;
generateName is unsupported. This store adds those plus PUT, the ``/status``
subresource kept apart from spec, generation bumps, optimistic concurrency on
every write (PUT, PATCH, status, DELETE preconditions), finalizers and
ownerReference garbage collection, label/field selectors, CRD registration with
schema validation and defaulting, Table output for ``kubectl get`` printer
columns, and built-in checks for Lease and PriorityClass.

Watches read a per-kind event log by cursor: no lock, no per-watcher buffer, and
a writer never waits for a watcher (the previous design waited on an
``asyncio.Condition`` and a watcher cancelled in that wait could leave its lock
held, after which every write hung while reads still answered).

Known gaps (real API server behaviour this does not emulate) are listed in
``docs/testing.md``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import json
import random
import re
import socket
import string
import struct
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import jsonschema
from kmock import KubernetesEmulator, KubernetesError, ResourceInfo
from kmock._internal import apps, parsing, rendering

ALL_VERBS = {"create", "delete", "get", "list", "patch", "update", "watch"}
HISTORY = 10_000  # watch events kept per kind; a watcher further behind gets 410 Expired and re-lists
WATCH_WRITE_TIMEOUT = 60.0  # seconds a watch client may leave an event unread before its stream is closed


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class Kind:
    """What the store knows about one resource type."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool = True
    schema: dict | None = None
    columns: list[dict] = field(default_factory=list)
    check: Any = None  # built-in validation: check(emulator, kind, new, old) raises ApiError, may default fields

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


BUILTINS: list[tuple[str, str, str, str, bool, bool, set[str]]] = [
    # group, version, plural, kind, namespaced, status subresource, short names
    ("", "v1", "pods", "Pod", True, True, {"po"}),
    ("", "v1", "nodes", "Node", False, True, {"no"}),
    ("", "v1", "namespaces", "Namespace", False, True, {"ns"}),
    ("", "v1", "events", "Event", True, False, {"ev"}),
    ("", "v1", "secrets", "Secret", True, False, set()),
    ("", "v1", "configmaps", "ConfigMap", True, False, {"cm"}),
    ("", "v1", "services", "Service", True, True, {"svc"}),
    ("", "v1", "serviceaccounts", "ServiceAccount", True, False, {"sa"}),
    ("batch", "v1", "jobs", "Job", True, True, set()),
    ("apps", "v1", "deployments", "Deployment", True, True, {"deploy"}),
    ("events.k8s.io", "v1", "events", "Event", True, False, set()),
    ("coordination.k8s.io", "v1", "leases", "Lease", True, False, set()),
    ("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, False, {"pc"}),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False, True, {"crd"}),
    ("ray.io", "v1", "rayservices", "RayService", True, True, set()),
    ("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration",
     False, False, set()),
]


class ApiError(KubernetesError):
    pass


_stock_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock 0.8 reads '/api/v1/namespaces[/NAME[/status]]' as a namespace prefix and crashes; these
    URLs address Namespace objects themselves."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (len(parts) <= 4 or parts[4] in ("status", "finalize")):
        return parsing.ParsedPath(group="", version="v1", plural="namespaces",
                                  name=parts[3] if len(parts) > 3 else None,
                                  subresource=parts[4] if len(parts) > 4 else None)
    return _stock_parse_path(path)


parsing.parse_path = _parse_path  # rendering.Request._parse looks it up at call time


def _status_error(code: int, reason: str, message: str, kind: Kind | None = None, name: str | None = None,
                  causes: list[dict] | None = None) -> ApiError:
    details: dict[str, Any] = {}
    if kind is not None:
        details = {"kind": kind.kind if causes else kind.plural, "group": kind.group}
    if name:
        details["name"] = name
    if causes:
        details["causes"] = causes
    return ApiError(status=code, reason=reason, message=message, details=details)


# ---------------------------------------------------------------- selectors
_SET_EXPR = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def label_match(selector: str, labels: dict[str, str]) -> bool:
    for term in _split_selector(selector):
        term = term.strip()
        if not term:
            continue
        m = _SET_EXPR.match(term)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            inside = key in labels and labels[key] in values
            if (op == "in") != inside:
                return False
        elif "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = re.split(r"==?", term, maxsplit=1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def _dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def field_match(selector: str, obj: dict) -> bool:
    for term in _split_selector(selector):
        term = term.strip()
        if not term:
            continue
        negate = "!=" in term
        k, v = (term.split("!=", 1) if negate else re.split(r"==?", term, maxsplit=1))
        value = _dig(obj, k.strip())
        value = "" if value is None else str(value)
        if (value == v.strip()) == negate:
            return False
    return True


# ---------------------------------------------------------------- patching
def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


_SMP_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
             "volumeMounts": "mountPath", "conditions": "type", "schedulingGates": "name", "ports": "containerPort"}


def strategic_merge_patch(target: Any, patch: Any, key: str | None = None) -> Any:
    """Strategic merge patch for the list keys the tests and kubectl use (name/type-keyed lists)."""
    if isinstance(patch, list) and isinstance(target, list) and key in _SMP_KEYS:
        mkey = _SMP_KEYS[key]
        result = copy.deepcopy(target)
        for item in patch:
            if not isinstance(item, dict) or mkey not in item:
                return copy.deepcopy(patch)
            if item.get("$patch") == "delete":
                result = [x for x in result if x.get(mkey) != item[mkey]]
                continue
            for i, cur in enumerate(result):
                if isinstance(cur, dict) and cur.get(mkey) == item[mkey]:
                    result[i] = strategic_merge_patch(cur, item)
                    break
            else:
                result.append(copy.deepcopy(item))
        return result
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, value in patch.items():
        if k.startswith("$"):
            continue
        if value is None:
            result.pop(k, None)
        else:
            result[k] = strategic_merge_patch(result.get(k), value, k)
    return result


# ---------------------------------------------------------------- schema
def _default_and_prune(node: Any, schema: dict, path: str, unknown: list[str]) -> Any:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return node
    if isinstance(node, dict) and "properties" in schema:
        props = schema["properties"]
        for key in list(node):
            if key not in props:
                unknown.append(f"{path}.{key}".lstrip("."))
                del node[key]
        for key, sub in props.items():
            if key not in node and "default" in sub:
                node[key] = copy.deepcopy(sub["default"])
            if key in node:
                node[key] = _default_and_prune(node[key], sub, f"{path}.{key}", unknown)
    elif isinstance(node, list) and "items" in schema:
        return [_default_and_prune(x, schema["items"], f"{path}[{i}]", unknown) for i, x in enumerate(node)]
    return node


def validate_against(kind: Kind, obj: dict, strict_fields: bool) -> None:
    """Default, prune and validate ``obj`` like the API server does for a structural schema."""
    if kind.schema is None:
        return
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    unknown: list[str] = []
    _default_and_prune(body, kind.schema, "", unknown)
    name = obj.get("metadata", {}).get("name", "")
    if unknown and strict_fields:
        causes = [{"reason": "FieldValueInvalid", "message": f'unknown field "{u}"', "field": u} for u in unknown]
        raise _status_error(422, "Invalid", f'{kind.kind}.{kind.group} "{name}" is invalid: '
                            + ", ".join(c["message"] for c in causes), kind, name, causes)
    errors = sorted(jsonschema.Draft4Validator(kind.schema).iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        causes = []
        for e in errors[:10]:
            where = ".".join(str(p) for p in e.absolute_path) or "<root>"
            causes.append({"reason": "FieldValueInvalid", "field": where,
                           "message": f"Invalid value: {json.dumps(e.instance)[:80]}: {e.message}"})
        raise _status_error(422, "Invalid", f'{kind.kind}.{kind.group} "{name}" is invalid: '
                            + "; ".join(f"{c['field']}: {c['message']}" for c in causes), kind, name, causes)
    obj.update(body)


def _human_age(stamp: Any) -> str | None:
    """The API server renders date columns as ages ('42s', '5m', '3h', '2d')."""
    if not isinstance(stamp, str):
        return None
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    secs = (datetime.now(UTC) - then).total_seconds()
    if secs < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= 2 * size:
            return f"{int(secs // size)}{unit}"
    return f"{int(secs)}s"


def _jsonpath(obj: dict, path: str) -> Any:
    return _dig(obj, path.lstrip("."))


# ---------------------------------------------------------------- admission
def _rule_matches(rules: list[dict], kind: Kind, operation: str) -> bool:
    def has(values: list[str] | None, value: str) -> bool:
        return bool(values) and ("*" in values or value in values)

    return any(has(r.get("apiGroups"), kind.group) and has(r.get("apiVersions"), kind.version)
               and has(r.get("operations"), operation) and has(r.get("resources"), kind.plural) for r in rules)


async def call_validating_webhooks(configs: list[dict], kind: Kind, operation: str, obj: dict,
                                   old: dict | None) -> None:
    """Send an AdmissionReview to each matching webhook (by URL); raise on denial or on failure with Fail."""
    meta = obj.get("metadata") or {}
    for cfg in configs:
        for hook in cfg.get("webhooks") or []:
            url = (hook.get("clientConfig") or {}).get("url")
            if not url or not _rule_matches(hook.get("rules") or [], kind, operation):
                continue  # service references need cluster DNS: not emulated
            gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
            gvr = {"group": kind.group, "version": kind.version, "resource": kind.plural}
            review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
                "uid": str(uuid.uuid4()), "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
                "name": meta.get("name"), "namespace": meta.get("namespace"), "operation": operation,
                "userInfo": {"username": "emulator-user"}, "object": obj, "oldObject": old, "dryRun": False,
                "options": {}}}
            try:
                timeout = aiohttp.ClientTimeout(total=hook.get("timeoutSeconds") or 10)
                async with aiohttp.ClientSession(timeout=timeout) as session, session.post(url, json=review) as r:
                    answer = (await r.json())["response"]
            except Exception as exc:
                if hook.get("failurePolicy", "Fail") == "Ignore":
                    continue
                raise _status_error(500, "InternalError", f'Internal error occurred: failed calling webhook '
                                    f'"{hook.get("name")}": {exc}') from None
            if not answer.get("allowed"):
                st = answer.get("status") or {}
                raise _status_error(int(st.get("code") or 400), st.get("reason") or "BadRequest",
                                    f'admission webhook "{hook.get("name")}" denied the request: '
                                    f'{st.get("message", "")}')


# ---------------------------------------------------------------- built-in validation
_MAX_INT32 = 2**31 - 1
PREEMPTION_POLICIES = ("PreemptLowerPriority", "Never")
_MICROTIME_FIELDS = ("acquireTime", "renewTime")


def _invalid(kind: Kind, name: str, field_path: str, message: str) -> ApiError:
    cause = {"reason": "FieldValueInvalid", "field": field_path, "message": message}
    return _status_error(422, "Invalid", f'{kind.kind}.{kind.group} "{name}" is invalid: {field_path}: {message}',
                         kind, name, [cause])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_priority_class(emu: Emulator, kind: Kind, obj: dict, old: dict | None) -> None:
    """What the API server and its Priority admission plugin enforce on a PriorityClass."""
    name = obj["metadata"]["name"]
    value = obj.get("value")
    if value is None:
        raise _invalid(kind, name, "value", "Required value")
    if not _is_int(value) or not -(2**31) <= value <= _MAX_INT32:
        raise _invalid(kind, name, "value", f"Invalid value: {json.dumps(value)}: must be a 32-bit integer")
    if value > 1_000_000_000 and not name.startswith("system-"):
        raise _invalid(kind, name, "value", f"Invalid value: {value}: must be no greater than 1000000000 "
                       "(higher values are reserved for system-* classes)")
    obj.setdefault("preemptionPolicy", "PreemptLowerPriority")
    if obj["preemptionPolicy"] not in PREEMPTION_POLICIES:
        raise _invalid(kind, name, "preemptionPolicy", f'Unsupported value: {json.dumps(obj["preemptionPolicy"])}: '
                       f"supported values: {', '.join(repr(p) for p in PREEMPTION_POLICIES)}")
    if not isinstance(obj.get("globalDefault", False), bool):
        raise _invalid(kind, name, "globalDefault", "Invalid value: must be a boolean")
    if old is not None:
        for immutable in ("value", "preemptionPolicy"):
            if obj.get(immutable) != old.get(immutable, "PreemptLowerPriority" if immutable == "preemptionPolicy"
                                             else None):
                raise _invalid(kind, name, immutable, "field is immutable")
    if obj.get("globalDefault"):
        for other in emu.objects_of(kind):
            if other.get("globalDefault") and other["metadata"]["name"] != name:
                raise _status_error(403, "Forbidden", f'priorityclasses.scheduling.k8s.io "{name}" is forbidden: '
                                    f'PriorityClass {other["metadata"]["name"]} is already marked as default. '
                                    "Only one default can exist", kind, name)


def _microtime(kind: Kind, name: str, field_path: str, value: Any) -> str:
    """MicroTime as the API server stores it: RFC 3339 in UTC with microseconds."""
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise _status_error(400, "BadRequest", f"{field_path}: invalid MicroTime {value!r}: want RFC 3339 "
                            "such as 2024-01-01T00:00:00.000000Z", kind, name) from None
    if parsed.tzinfo is None:
        raise _status_error(400, "BadRequest", f"{field_path}: MicroTime {value!r} has no time zone", kind, name)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_lease(emu: Emulator, kind: Kind, obj: dict, old: dict | None) -> None:
    name = obj["metadata"]["name"]
    spec = obj.get("spec")
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise _invalid(kind, name, "spec", "Invalid value: must be an object")
    if spec.get("holderIdentity") is not None and not isinstance(spec["holderIdentity"], str):
        raise _invalid(kind, name, "spec.holderIdentity", "Invalid value: must be a string")
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not _is_int(duration) or duration <= 0):
        raise _invalid(kind, name, "spec.leaseDurationSeconds", f"Invalid value: {json.dumps(duration)}: "
                       "must be greater than 0")
    transitions = spec.get("leaseTransitions")
    if transitions is not None and (not _is_int(transitions) or transitions < 0):
        raise _invalid(kind, name, "spec.leaseTransitions", f"Invalid value: {json.dumps(transitions)}: "
                       "must be greater than or equal to 0")
    for key in _MICROTIME_FIELDS:
        if spec.get(key) is not None:
            spec[key] = _microtime(kind, name, f"spec.{key}", spec[key])


EVENT_TEXT_LIMIT, EVENT_FIELD_LIMIT = 1024, 128  # k8s.io/kubernetes pkg/apis/core/validation/events.go


def _check_core_event(emu: Emulator, kind: Kind, obj: dict, old: dict | None) -> None:
    """core/v1 Events as the API server's legacy validation checks them (client-go and the python client's
    ``create_namespaced_event``): the involved object's namespace must match; an Event with ``eventTime`` is
    a "new" Event and also needs reportingComponent, reportingInstance, action and reason within limits."""
    name, ns = obj["metadata"]["name"], obj["metadata"].get("namespace", "")
    involved = obj.get("involvedObject") or {}
    if not obj.get("eventTime"):
        if involved.get("namespace") and involved["namespace"] != ns:
            raise _invalid(kind, name, "involvedObject.namespace", f'Invalid value: "{involved["namespace"]}": '
                           "does not match event.namespace")
        if not involved.get("namespace") and ns not in ("", "default"):
            raise _invalid(kind, name, "involvedObject.namespace", 'Invalid value: "": does not match event.namespace')
        return
    if not involved.get("namespace") and ns not in ("default", "kube-system"):
        raise _invalid(kind, name, "involvedObject.namespace", 'Invalid value: "": does not match event.namespace')
    _event_strict_fields(kind, name, obj, "reportingComponent", "message")


def _check_events_v1(emu: Emulator, kind: Kind, obj: dict, old: dict | None) -> None:
    """events.k8s.io/v1 Events: eventTime, reportingController, reportingInstance, action and reason required."""
    name = obj["metadata"]["name"]
    if not obj.get("eventTime"):
        raise _invalid(kind, name, "eventTime", "Required value")
    if obj.get("type") not in ("Normal", "Warning"):
        raise _invalid(kind, name, "type", f'Unsupported value: {json.dumps(obj.get("type"))}: supported values: '
                       '"Normal", "Warning"')
    _event_strict_fields(kind, name, obj, "reportingController", "note")


def _event_strict_fields(kind: Kind, name: str, obj: dict, controller: str, text: str) -> None:
    if not obj.get(controller):
        raise _invalid(kind, name, controller, "Required value")
    for key in ("reportingInstance", "action", "reason"):
        if not obj.get(key):
            raise _invalid(kind, name, key, "Required value")
        if len(str(obj[key])) > EVENT_FIELD_LIMIT:
            raise _invalid(kind, name, key, f"Invalid value: can have at most {EVENT_FIELD_LIMIT} characters")
    if len(str(obj.get(text) or "")) > EVENT_TEXT_LIMIT:
        raise _invalid(kind, name, text, f"Invalid value: can have at most {EVENT_TEXT_LIMIT} characters")


BUILTIN_CHECKS: dict[tuple[str, str], Any] = {
    ("scheduling.k8s.io", "priorityclasses"): _check_priority_class,
    ("coordination.k8s.io", "leases"): _check_lease,
    ("", "events"): _check_core_event,
    ("events.k8s.io", "events"): _check_events_v1,
}

# ---------------------------------------------------------------- metadata (every kind)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_NAMED = ("namespaces", "services")  # kinds whose names must be DNS labels (63), not subdomains (253)


def _label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain of at most 253 characters"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return ("name part must be at most 63 characters, alphanumeric, '-', '_' or '.', "
                "starting and ending with an alphanumeric character")
    return None


def check_metadata(kind: Kind, obj: dict) -> None:
    """The object-meta rules every API server kind shares: names, label keys and values, annotation keys."""
    meta = obj["metadata"]
    name = str(meta.get("name", ""))
    limit, pattern = (63, _DNS_LABEL) if kind.plural in _LABEL_NAMED else (253, _DNS_SUBDOMAIN)
    if len(name) > limit or not pattern.match(name):
        raise _invalid(kind, name[:80], "metadata.name", f'Invalid value: "{name[:80]}": a lowercase RFC 1123 '
                       f"{'label' if limit == 63 else 'subdomain'} of at most {limit} characters must consist of "
                       "lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
                       "character")
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        raise _invalid(kind, name, "metadata.labels", "Invalid value: must be a map of strings")
    for key, value in labels.items():
        problem = _label_key_problem(str(key))
        if problem:
            raise _invalid(kind, name, "metadata.labels", f'Invalid value: "{str(key)[:80]}": {problem}')
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            raise _invalid(kind, name, f"metadata.labels.{key}", f"Invalid value: {json.dumps(value)[:80]}: a valid "
                           "label value must be 63 characters or less and must be empty or begin and end with an "
                           "alphanumeric character, with '-', '_' or '.' between")
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise _invalid(kind, name, "metadata.annotations", "Invalid value: must be a map of strings")
    total = 0
    for key, value in annotations.items():
        problem = _label_key_problem(str(key))
        if problem:
            raise _invalid(kind, name, "metadata.annotations", f'Invalid value: "{str(key)[:80]}": {problem}')
        if not isinstance(value, str):
            raise _invalid(kind, name, f"metadata.annotations.{key}", "Invalid value: must be a string")
        total += len(key) + len(value)
    if total > 256 * 1024:
        raise _invalid(kind, name, "metadata.annotations", f"Too long: must have at most {256 * 1024} bytes")
BUILTIN_COLUMNS: dict[tuple[str, str], list[dict]] = {
    ("", "pods"): [{"name": "Status", "jsonPath": ".status.phase"},
                   {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                   {"name": "Node", "jsonPath": ".spec.nodeName", "priority": 1}],
    ("coordination.k8s.io", "leases"): [{"name": "Holder", "jsonPath": ".spec.holderIdentity"},
                                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
    ("scheduling.k8s.io", "priorityclasses"): [
        {"name": "Value", "type": "integer", "jsonPath": ".value"},
        {"name": "Global-Default", "type": "boolean", "jsonPath": ".globalDefault"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "PreemptionPolicy", "jsonPath": ".preemptionPolicy"}],
}


# ---------------------------------------------------------------- watch history
@dataclass(slots=True)
class WatchEvent:
    """One committed change. The object is shared with the store (stored objects are never mutated in
    place) and its JSON line is encoded once, however many watchers send it."""

    rv: int
    type: str
    obj: dict
    _line: bytes | None = None

    def line(self) -> bytes:
        if self._line is None:
            self._line = json.dumps({"type": self.type, "object": self.obj}, separators=(",", ":")).encode() + b"\n"
        return self._line


class EventLog:
    """The watch history of one kind, read by cursor.

    Writers append and set each watcher's wake-up flag; they never wait on a watcher, hold a lock or touch a
    watcher's buffer. A watcher keeps only its cursor (the last resourceVersion it sent), so a slow or dead
    watcher costs nothing but that integer; one that falls behind the retained window is told 410 Expired,
    as the API server's watch cache does, and the client re-lists.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.events: list[WatchEvent] = []
        self.rvs: list[int] = []
        self.expired_below = 0  # the newest resourceVersion dropped from the window
        self.wakeups: set[asyncio.Event] = set()

    def append(self, event: WatchEvent) -> None:
        self.events.append(event)
        self.rvs.append(event.rv)
        if len(self.events) > self.size + max(64, self.size // 4):  # trim in batches: amortised O(1)
            drop = len(self.events) - self.size
            self.expired_below = self.rvs[drop - 1]
            del self.events[:drop], self.rvs[:drop]
        for wake in self.wakeups:
            wake.set()

    def expired(self, cursor: int) -> bool:
        """True when an event after ``cursor`` has already been dropped."""
        return cursor < self.expired_below

    def after(self, cursor: int, limit: int) -> list[WatchEvent]:
        start = bisect.bisect_right(self.rvs, cursor)
        return self.events[start:start + limit]


def _expired(rv: int, oldest: int) -> bytes:
    gone = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 410,
            "reason": "Expired", "message": f"too old resource version: {rv} ({oldest})"}
    return json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n"


# ---------------------------------------------------------------- the store
Key = tuple[str, str, str | None, str]  # group, plural, namespace (None: cluster-scoped), name


@attrs.define(kw_only=True)
class Emulator(KubernetesEmulator):
    """In-memory Kubernetes API served over HTTP on 127.0.0.1 (see module docstring).

    Every write is synchronous on the event loop between reading the current object and committing the
    next version, so writes are atomic; the only await inside a write is a validating webhook, after which
    the write starts again if the object moved meanwhile.
    """

    kinds: dict[tuple[str, str], Kind] = attrs.field(factory=dict)
    store: dict[Key, dict] = attrs.field(factory=dict)
    rv: int = 0
    history_size: int = HISTORY
    watch_write_timeout: float = WATCH_WRITE_TIMEOUT
    logs: dict[tuple[str, str], EventLog] = attrs.field(factory=dict)
    stopping: bool = False
    requests_served: dict[tuple[str, str], int] = attrs.field(factory=dict)  # (verb, resource) -> count, for load tests
    watchers: int = 0  # open watch streams, for tests
    _by_kind: dict[tuple[str, str], dict[Key, dict]] = attrs.field(factory=dict)
    _dependents: dict[str, set[Key]] = attrs.field(factory=dict)  # owner uid -> keys of objects it owns

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock keeps every request for assertions; a long load test would keep millions. Keep the latest.
        self._requests = deque(maxlen=1000)
        for group, version, plural, kind, namespaced, status, short in BUILTINS:
            self.register(Kind(group, version, plural, kind, namespaced, status,
                               columns=BUILTIN_COLUMNS.get((group, plural), []),
                               check=BUILTIN_CHECKS.get((group, plural))), short)
        for ns in ("default", "kube-system"):  # what every cluster starts with
            self.rv += 1
            self._put(("", "namespaces", None, ns), {
                "apiVersion": "v1", "kind": "Namespace", "status": {"phase": "Active"},
                "metadata": {"name": ns, "uid": str(uuid.uuid4()), "creationTimestamp": _now(),
                             "resourceVersion": str(self.rv), "generation": 1}})
        self.fallback["get /openapi/v2"] << 404
        self.fallback["get", re.compile(r"^/openapi/v3.*")] << self._serve_openapi_v3
        self.fallback["get", re.compile(r"^/apis/[^/]+/[^/]+$")] ** 1 << self._serve_resource_list
        self.fallback["get", re.compile(r"^/api/v1$")] ** 1 << self._serve_resource_list

    # -- registration
    def register(self, kind: Kind, shortnames: set[str] | None = None, categories: set[str] | None = None) -> None:
        self.kinds[(kind.group, kind.plural)] = kind
        key = f"{kind.group}/{kind.version}/{kind.plural}" if kind.group else f"{kind.version}/{kind.plural}"
        self.resources[key] = (
            ResourceInfo(
                namespaced=kind.namespaced, kind=kind.kind, singular=kind.kind.lower(), verbs=ALL_VERBS,
                shortnames=shortnames or set(), categories=categories or set(),
                subresources={"status"} if kind.status_subresource else set(),
            )
        )

    def _register_crd(self, crd: dict) -> None:
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for ver in spec.get("versions", []):
            if not ver.get("served", True):
                continue
            kind = Kind(
                group=spec["group"], version=ver["name"], plural=names["plural"], kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                status_subresource="status" in (ver.get("subresources") or {}),
                schema=(ver.get("schema") or {}).get("openAPIV3Schema"),
                columns=ver.get("additionalPrinterColumns", []),
            )
            self.register(kind, set(names.get("shortNames", [])), set(names.get("categories", [])))

    # -- discovery and OpenAPI (what kubectl needs besides the objects)
    async def _serve_resource_list(self, request: rendering.Request) -> dict:
        """APIResourceList; subresources carry no short names, so kubectl does not warn."""
        parts = request.url.path.strip("/").split("/")
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        kinds = [k for k in self.kinds.values() if k.group == group and k.version == version]
        if not kinds:
            raise _status_error(404, "NotFound", "the server could not find the requested resource")
        resources: list[dict] = []
        for k in kinds:
            info = self.resources[f"{k.group}/{k.version}/{k.plural}" if k.group else f"{k.version}/{k.plural}"]
            resources.append({"name": k.plural, "singularName": k.kind.lower(), "namespaced": k.namespaced,
                              "kind": k.kind, "verbs": sorted(ALL_VERBS), "shortNames": sorted(info.shortnames),
                              "categories": sorted(info.categories)})
            if k.status_subresource:
                resources.append({"name": f"{k.plural}/status", "singularName": "", "namespaced": k.namespaced,
                                  "kind": k.kind, "verbs": ["get", "patch", "update"]})
        return {"apiVersion": "v1", "kind": "APIResourceList",
                "groupVersion": f"{group}/{version}" if group else version, "resources": resources}

    async def _serve_openapi_v3(self, request: rendering.Request) -> dict:
        """OpenAPI v3: kubectl reads it to learn that PATCH takes ``fieldValidation`` (server-side validation)."""
        path = request.url.path.rstrip("/")
        gvs = sorted({(k.group, k.version) for k in self.kinds.values()})
        rel = lambda g, v: f"apis/{g}/{v}" if g else f"api/{v}"  # noqa: E731
        if path == "/openapi/v3":
            return {"paths": {rel(g, v): {"serverRelativeURL": f"/openapi/v3/{rel(g, v)}?hash={self.rv}"}
                              for g, v in gvs}}
        for g, v in gvs:
            if path == f"/openapi/v3/{rel(g, v)}":
                return self._openapi_doc(g, v)
        raise _status_error(404, "NotFound", "the server could not find the requested resource")

    def _openapi_doc(self, group: str, version: str) -> dict:
        paths: dict[str, Any] = {}
        schemas: dict[str, Any] = {}
        params = [{"name": n, "in": "query", "schema": {"type": "string"}}
                  for n in ("fieldValidation", "dryRun", "fieldManager")]
        for k in self.kinds.values():
            if (k.group, k.version) != (group, version):
                continue
            gvk = {"group": k.group, "version": k.version, "kind": k.kind}
            base = f"/{'apis/' + k.group if k.group else 'api'}/{k.version}"
            scope = f"{base}/namespaces/{{namespace}}" if k.namespaced else base
            item = f"{scope}/{k.plural}/{{name}}"
            coll = item.rsplit("/", 1)[0]
            op = {"x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": {"200": {}}}
            paths[item] = {"get": op, "put": op, "patch": op, "delete": op}
            paths[coll] = {"get": op, "post": op}
            schema = copy.deepcopy(k.schema) if k.schema else {"type": "object",
                                                                "x-kubernetes-preserve-unknown-fields": True}
            schema["x-kubernetes-group-version-kind"] = [gvk]
            schemas[f"{k.group or 'core'}.{k.version}.{k.kind}"] = schema
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.31.0"},
                "paths": paths, "components": {"schemas": schemas}}

    def _webhooks(self, kind: Kind) -> list[dict]:
        if kind.plural == "validatingwebhookconfigurations":
            return []
        return self.objects_of(self.kinds[("admissionregistration.k8s.io", "validatingwebhookconfigurations")])

    # -- the indexed store; stored objects are replaced, never mutated in place
    def _put(self, key: Key, obj: dict) -> None:
        old = self.store.get(key)
        if old is not None:
            self._unindex_owners(key, old)
        self.store[key] = obj
        self._by_kind.setdefault(key[:2], {})[key] = obj
        for ref in obj["metadata"].get("ownerReferences") or []:
            if ref.get("uid"):
                self._dependents.setdefault(ref["uid"], set()).add(key)

    def _pop(self, key: Key) -> dict:
        obj = self.store.pop(key)
        del self._by_kind[key[:2]][key]
        self._unindex_owners(key, obj)
        return obj

    def _unindex_owners(self, key: Key, obj: dict) -> None:
        for ref in obj["metadata"].get("ownerReferences") or []:
            deps = self._dependents.get(ref.get("uid") or "")
            if deps is not None:
                deps.discard(key)
                if not deps:
                    del self._dependents[ref["uid"]]

    def _log(self, kind: Kind) -> EventLog:
        log = self.logs.get((kind.group, kind.plural))
        if log is None:
            log = self.logs[(kind.group, kind.plural)] = EventLog(self.history_size)
        return log

    def _emit(self, kind: Kind, type_: str, obj: dict) -> None:
        """Record a committed change for watchers; never waits (watchers read the log at their own pace)."""
        self._log(kind).append(WatchEvent(int(obj["metadata"]["resourceVersion"]), type_, obj))

    def _bump(self, obj: dict) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def shutdown(self) -> None:
        """End every watch stream (the server is stopping)."""
        self.stopping = True
        for log in self.logs.values():
            for wake in log.wakeups:
                wake.set()

    # -- internal API, also used by the cluster stand-in (returns copies: callers may change them)
    def get(self, group: str, plural: str, namespace: str | None, name: str) -> dict | None:
        obj = self.store.get((group, plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, group: str, plural: str, namespace: str | None = None) -> list[dict]:
        objs = self._by_kind.get((group, plural), {})
        return [copy.deepcopy(o) for k, o in sorted(objs.items(), key=lambda kv: (kv[0][2] or "", kv[0][3]))
                if namespace is None or k[2] == namespace]

    def objects_of(self, kind: Kind) -> list[dict]:
        """The stored objects themselves (read-only) of one kind, unsorted."""
        return list(self._by_kind.get((kind.group, kind.plural), {}).values())

    def kind_of(self, group: str, plural: str) -> Kind:
        try:
            return self.kinds[(group, plural)]
        except KeyError:
            msg = f"the server could not find the requested resource ({plural})"
            raise _status_error(404, "NotFound", msg) from None

    def _key(self, kind: Kind, namespace: str | None, name: str) -> Key:
        return (kind.group, kind.plural, namespace if kind.namespaced else None, name)

    async def create(self, kind: Kind, namespace: str | None, body: dict, strict: bool = False,
                     dry_run: bool = False) -> dict:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if meta.get("resourceVersion"):
            raise _status_error(500, "InternalError", "resourceVersion should not be set on objects to be created",
                                kind, meta.get("name"))
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise _status_error(422, "Invalid", f"{kind.kind} is invalid: metadata.name: Required value", kind)
            while True:
                meta["name"] = prefix + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
                if self._key(kind, namespace or meta.get("namespace") or "default", meta["name"]) not in self.store:
                    break
        name = meta["name"]
        if kind.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise _status_error(400, "BadRequest", "the namespace of the provided object does not match "
                                    "the namespace sent on the request", kind, name)
            namespace = namespace or meta.get("namespace") or "default"
            meta["namespace"] = namespace
        else:
            namespace = None
            meta.pop("namespace", None)
        key = self._key(kind, namespace, name)
        if key in self.store:
            raise _status_error(409, "AlreadyExists", f'{kind.qualified} "{name}" already exists', kind, name)
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        if kind.status_subresource and kind.group not in ("", "batch", "apiextensions.k8s.io"):
            obj.pop("status", None)
        check_metadata(kind, obj)
        validate_against(kind, obj, strict)
        if kind.check is not None:
            kind.check(self, kind, obj, None)
        if self._webhooks(kind):
            await call_validating_webhooks(self._webhooks(kind), kind, "CREATE", obj, None)
            if key in self.store:  # created by someone else while the webhook answered
                raise _status_error(409, "AlreadyExists", f'{kind.qualified} "{name}" already exists', kind, name)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        meta.pop("deletionTimestamp", None)
        if kind.plural == "customresourcedefinitions":
            obj["status"] = {"conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "lastTransitionTime": _now()},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "lastTransitionTime": _now()}],
                "acceptedNames": obj["spec"]["names"]}
        if dry_run:
            return copy.deepcopy(obj)
        if kind.plural == "customresourcedefinitions":
            self._register_crd(obj)
        self._bump(obj)
        self._put(key, obj)
        self._emit(kind, "ADDED", obj)
        return copy.deepcopy(obj)

    async def replace(self, kind: Kind, namespace: str | None, name: str, new: dict, subresource: str | None,
                      strict: bool = False, dry_run: bool = False) -> dict:
        """PUT: store ``new`` as the next version (409 if it names a resourceVersion that is not current)."""
        return await self._update(kind, namespace, name, lambda cur: copy.deepcopy(new), subresource, strict,
                                  dry_run)

    async def patch(self, kind: Kind, namespace: str | None, name: str, patch: Any, content_type: str,
                    subresource: str | None = None, strict: bool = False, dry_run: bool = False) -> dict:
        def apply(cur: dict) -> dict:
            try:
                if "json-patch" in content_type:
                    return jsonpatch.apply_patch(cur, patch)
                new = strategic_merge_patch(cur, patch) if "strategic-merge-patch" in content_type \
                    else merge_patch(cur, patch)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                code = 409 if isinstance(exc, jsonpatch.JsonPatchTestFailed) else 422
                raise _status_error(code, "Conflict" if code == 409 else "Invalid", f"the patch failed: {exc}",
                                    kind, name) from None
            # Merge patches carry a resourceVersion only to ask for optimistic concurrency.
            given = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else None
            if not isinstance(new.get("metadata"), dict):
                raise _status_error(422, "Invalid", "metadata must be an object", kind, name)
            new["metadata"]["resourceVersion"] = given or cur["metadata"]["resourceVersion"]
            return new

        if not isinstance(patch, dict | list):
            raise _status_error(400, "BadRequest", "the patch body must be a JSON object or array", kind, name)
        return await self._update(kind, namespace, name, apply, subresource, strict, dry_run)

    async def _update(self, kind: Kind, namespace: str | None, name: str, make: Any, subresource: str | None,
                      strict: bool, dry_run: bool) -> dict:
        key = self._key(kind, namespace, name)
        while True:
            cur = self.store.get(key)
            if cur is None:
                raise _status_error(404, "NotFound", f'{kind.qualified} "{name}" not found', kind, name)
            result = self._next_version(kind, cur, make(cur), subresource, strict)
            if result is cur:
                return copy.deepcopy(cur)  # no-op writes keep the resourceVersion and emit nothing
            hooks = self._webhooks(kind) if subresource is None and (
                result.get("spec") != cur.get("spec") or result["metadata"] != cur["metadata"]) else []
            if hooks:
                await call_validating_webhooks(hooks, kind, "UPDATE", result, copy.deepcopy(cur))
                if self.store.get(key) is not cur:
                    continue  # changed while the webhook answered: apply the request to the latest version
            if dry_run:
                return copy.deepcopy(result)
            return self._commit(kind, key, cur, result)

    def _next_version(self, kind: Kind, cur: dict, new: dict, subresource: str | None, strict: bool) -> dict:
        """The object ``new`` makes of ``cur``, validated; ``cur`` itself when nothing changes."""
        name = cur["metadata"]["name"]
        if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
            raise _status_error(400, "BadRequest", "the body must be an object with object metadata", kind, name)
        given_rv = str((new.get("metadata") or {}).get("resourceVersion") or "")
        if given_rv not in ("", "0") and given_rv != cur["metadata"]["resourceVersion"]:
            if not given_rv.isdigit():
                raise _status_error(400, "BadRequest", f"invalid resourceVersion {given_rv!r}", kind, name)
            raise _status_error(409, "Conflict", f'Operation cannot be fulfilled on {kind.qualified} "{name}": '
                                "the object has been modified; please apply your changes to the latest version "
                                "and try again", kind, name)
        if subresource == "status":
            result = copy.deepcopy(cur)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        else:
            result = new
            if kind.status_subresource:
                if "status" in cur:
                    result["status"] = copy.deepcopy(cur["status"])
                else:
                    result.pop("status", None)
            meta = result.setdefault("metadata", {})
            for fixed in ("uid", "creationTimestamp", "name", "namespace", "generation", "deletionTimestamp"):
                if fixed in cur["metadata"]:
                    meta[fixed] = cur["metadata"][fixed]
                else:
                    meta.pop(fixed, None)
            check_metadata(kind, result)
            validate_against(kind, result, strict)
            if kind.check is not None:
                kind.check(self, kind, result, cur)
        result["apiVersion"], result["kind"] = kind.api_version, kind.kind
        result["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        return cur if result == cur else result

    def _commit(self, kind: Kind, key: Key, cur: dict, result: dict) -> dict:
        content = lambda o: {k: v for k, v in o.items() if k not in ("metadata", "status")}  # noqa: E731
        if content(result) != content(cur):  # generation counts changes of the spec (and other content)
            result["metadata"]["generation"] = cur["metadata"].get("generation", 1) + 1
        self._bump(result)
        self._put(key, result)
        if kind.plural == "customresourcedefinitions":
            self._register_crd(result)
        if result["metadata"].get("deletionTimestamp") and not result["metadata"].get("finalizers"):
            self._finally_delete(kind, key)
        else:
            self._emit(kind, "MODIFIED", result)
        return copy.deepcopy(result)

    async def delete(self, kind: Kind, namespace: str | None, name: str, propagation: str = "Background",
                     preconditions: dict | None = None, dry_run: bool = False) -> dict:
        key = self._key(kind, namespace, name)
        cur = self.store.get(key)
        if cur is None:
            raise _status_error(404, "NotFound", f'{kind.qualified} "{name}" not found', kind, name)
        for field_name in ("resourceVersion", "uid"):
            want = (preconditions or {}).get(field_name)
            if want and want != cur["metadata"][field_name]:
                raise _status_error(409, "Conflict", f'Operation cannot be fulfilled on {kind.qualified} "{name}": '
                                    f"Precondition failed: {field_name.removesuffix('Version')}"
                                    f"{'Version' if field_name == 'resourceVersion' else ''}: "
                                    f"{want}, {field_name}: {cur['metadata'][field_name]}", kind, name)
        if dry_run:
            return copy.deepcopy(cur)
        if cur["metadata"].get("finalizers"):
            if not cur["metadata"].get("deletionTimestamp"):
                cur = copy.deepcopy(cur)
                cur["metadata"]["deletionTimestamp"] = _now()
                self._bump(cur)
                self._put(key, cur)
                self._emit(kind, "MODIFIED", cur)
            return copy.deepcopy(cur)
        return self._finally_delete(kind, key, orphan=propagation == "Orphan")

    def _finally_delete(self, kind: Kind, key: Key, orphan: bool = False) -> dict:
        obj = copy.deepcopy(self._pop(key))
        self._bump(obj)
        self._emit(kind, "DELETED", obj)
        if not orphan:
            self._collect_garbage(obj["metadata"]["uid"])
        return copy.deepcopy(obj)

    def _collect_garbage(self, owner_uid: str) -> None:
        """Delete dependents whose ownerReferences point at a deleted owner (background propagation)."""
        for key in sorted(self._dependents.get(owner_uid, set()), key=str):
            cur = self.store.get(key)
            if cur is None:
                continue
            kind = self.kinds[key[:2]]
            if cur["metadata"].get("finalizers"):
                if not cur["metadata"].get("deletionTimestamp"):
                    cur = copy.deepcopy(cur)
                    cur["metadata"]["deletionTimestamp"] = _now()
                    self._bump(cur)
                    self._put(key, cur)
                    self._emit(kind, "MODIFIED", cur)
            else:
                self._finally_delete(kind, key)

    # -- HTTP
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
        if request._raw_request is not None:  # every request served, by verb and resource[/subresource]
            verb = "WATCH" if request._raw_request.query.get("watch") in ("true", "1") else request._raw_request.method
            what = (f"{res.plural}/{request.subresource}" if request.subresource else res.plural) \
                if res is not None and res.plural else "(discovery)"
            self.requests_served[(verb, what)] = self.requests_served.get((verb, what), 0) + 1
        if res is None or not res.plural or (res.group, res.plural) not in self.kinds:
            if res is not None and res.plural and request.action is not None:
                raise _status_error(404, "NotFound", "the server could not find the requested resource")
            return await apps.RawHandler._handle(self, request)
        kind = self.kinds[(res.group, res.plural)]
        raw = request._raw_request
        assert raw is not None
        params = dict(raw.query)
        ns = request.namespace if kind.namespaced else None
        strict = params.get("fieldValidation") == "Strict"
        dry_run = params.get("dryRun") == "All"
        method = raw.method.upper()
        name, sub = request.name, request.subresource
        if sub not in (None, "status") or (sub == "status" and not kind.status_subresource):
            raise _status_error(404, "NotFound", f"subresource {sub} is not served for {kind.qualified}", kind, name)
        if params.get("watch") in ("true", "1"):
            return await self._watch(kind, request, params)
        if method == "GET" and name is None:
            return self._json(self._list_payload(kind, request, params))
        if method == "GET":
            obj = self.store.get(self._key(kind, ns, name))
            if obj is None:
                raise _status_error(404, "NotFound", f'{kind.qualified} "{name}" not found', kind, name)
            if "as=Table" in raw.headers.get("Accept", ""):
                return self._json(self._table(kind, [obj], params))
            return self._json(obj)
        body = request.data
        if method in ("POST", "PUT", "PATCH") and "protobuf" in raw.headers.get("Content-Type", ""):
            # client-go sends built-in kinds as protobuf; answered 415, it retries the request as JSON.
            raise _status_error(415, "UnsupportedMediaType", 'the body of the request was in an unknown format - '
                                'accepted media types include: application/json, application/yaml', kind, name)
        if method == "POST" and name is None:
            if not isinstance(body, dict):
                raise _status_error(400, "BadRequest", "the request body must be a JSON object", kind)
            return self._json(await self.create(kind, request.namespace, body, strict, dry_run), 201)
        if method == "PUT" and name is not None:
            if not isinstance(body, dict):
                raise _status_error(400, "BadRequest", "the request body must be a JSON object", kind, name)
            given = (body.get("metadata") or {}).get("name") if isinstance(body.get("metadata"), dict) else None
            if given and given != name:
                raise _status_error(400, "BadRequest", f"the name of the object ({given}) does not match the name "
                                    f"on the URL ({name})", kind, name)
            return self._json(await self.replace(kind, ns, name, body, sub, strict, dry_run))
        if method == "PATCH" and name is not None:
            ctype = raw.headers.get("Content-Type", "application/merge-patch+json")
            if "apply-patch" in ctype:
                raise _status_error(415, "UnsupportedMediaType", "server-side apply is not emulated", kind, name)
            return self._json(await self.patch(kind, ns, name, body, ctype, sub, strict, dry_run))
        if method == "DELETE" and name is not None:
            opts = body if isinstance(body, dict) else {}
            propagation = opts.get("propagationPolicy") or params.get("propagationPolicy") or "Background"
            return self._json(await self.delete(kind, ns, name, propagation, opts.get("preconditions"), dry_run))
        raise _status_error(405, "MethodNotAllowed", f"{method} is not supported on this path", kind, name)

    @staticmethod
    def _json(payload: dict, status: int = 200) -> aiohttp.web.Response:
        return aiohttp.web.json_response(payload, status=status)

    def _select(self, kind: Kind, request: rendering.Request, params: dict) -> list[dict]:
        """Matching stored objects (shared, read-only) in namespace/name order."""
        ns = request.namespace if kind.namespaced else None
        objs = sorted(self._by_kind.get((kind.group, kind.plural), {}).items(),
                      key=lambda kv: (kv[0][2] or "", kv[0][3]))
        return [o for k, o in objs if (ns is None or k[2] == ns) and (not request.name or k[3] == request.name)
                and self._matches(o, params)]

    @staticmethod
    def _matches(obj: dict, params: dict) -> bool:
        labels = obj["metadata"].get("labels") or {}
        if params.get("labelSelector") and not label_match(params["labelSelector"], labels):
            return False
        return not (params.get("fieldSelector") and not field_match(params["fieldSelector"], obj))

    def _list_payload(self, kind: Kind, request: rendering.Request, params: dict) -> dict:
        items = self._select(kind, request, params)
        accept = request._raw_request.headers.get("Accept", "") if request._raw_request else ""
        if "as=Table" in accept:
            return self._table(kind, items, params)
        return {"apiVersion": kind.api_version, "kind": f"{kind.kind}List",
                "metadata": {"resourceVersion": str(self.rv)}, "items": items}

    def _table(self, kind: Kind, items: list[dict], params: dict) -> dict:
        cols = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
        paths: list[str] = []
        for c in kind.columns:
            cols.append({"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
                         "description": c.get("description", ""), "priority": c.get("priority", 0)})
            paths.append(c["jsonPath"])
        if not kind.columns:
            cols.append({"name": "Age", "type": "date", "format": "", "description": "Age", "priority": 0})
            paths.append(".metadata.creationTimestamp")
        rows = []
        for obj in items:
            cells = [obj["metadata"]["name"]] + [
                _human_age(_jsonpath(obj, p)) if col["type"] == "date" else _jsonpath(obj, p)
                for p, col in zip(paths, cols[1:], strict=True)]
            partial = {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"]}
            rows.append({"cells": cells, "object": obj if params.get("includeObject") == "Object" else partial})
        return {"apiVersion": "meta.k8s.io/v1", "kind": "Table", "metadata": {"resourceVersion": str(self.rv)},
                "columnDefinitions": cols, "rows": rows}

    async def _watch(self, kind: Kind, request: rendering.Request, params: dict) -> aiohttp.web.StreamResponse:
        """Stream events after a cursor from the kind's log; nothing here can make a writer wait."""
        raw = request._raw_request
        assert raw is not None
        since = params.get("resourceVersion") or "0"
        if not since.isdigit():
            raise _status_error(400, "BadRequest", f"invalid resourceVersion {since!r}", kind)
        ns = request.namespace if kind.namespaced else None
        timeout = float(params.get("timeoutSeconds") or 0) or None
        log = self._log(kind)
        initial = params.get("sendInitialEvents") == "true"
        # Snapshot and cursor are taken together, with no await between: nothing can slip in unseen.
        snapshot = self._select(kind, request, params) if since == "0" or initial else []
        cursor = self.rv if since == "0" or initial else int(since)
        resp = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(raw)
        if log.expired(cursor):
            await resp.write(_expired(cursor, log.rvs[0] if log.rvs else self.rv))
            return resp

        def wanted(obj: dict) -> bool:
            m = obj["metadata"]
            if ns is not None and m.get("namespace") != ns:
                return False
            if request.name and m["name"] != request.name:
                return False
            return self._matches(obj, params)

        async def send(line: bytes) -> None:
            # A client that stops reading must not keep this stream (and its socket) forever.
            async with asyncio.timeout(self.watch_write_timeout):
                await resp.write(line)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        wake = asyncio.Event()
        log.wakeups.add(wake)
        self.watchers += 1
        try:
            for obj in snapshot:
                await send(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
            if initial:  # streaming list (WatchList): tell the client the snapshot is complete
                await send(json.dumps({"type": "BOOKMARK", "object": {
                    "kind": kind.kind, "apiVersion": kind.api_version, "metadata": {
                        "resourceVersion": str(cursor), "annotations": {"k8s.io/initial-events-end": "true"}}}})
                           .encode() + b"\n")
            while not self.stopping:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                if log.expired(cursor):  # fell behind the retained window: the client must re-list
                    await send(_expired(cursor, log.rvs[0]))
                    break
                batch = log.after(cursor, 256)
                if not batch:
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(remaining or 5.0, 5.0)):
                            await wake.wait()
                    if raw.transport is None or raw.transport.is_closing():
                        break
                    continue
                for event in batch:
                    cursor = event.rv
                    if wanted(event.obj):
                        await send(event.line())
                await asyncio.sleep(0)  # a watcher catching up must not starve the loop
        except ConnectionResetError:
            pass  # the client went away; it re-watches from its last version
        except TimeoutError:  # the client stopped reading: drop the connection rather than wait on it
            if raw.transport is not None:
                sock = raw.transport.get_extra_info("socket")
                if sock is not None:  # reset, so the kernel drops what is queued for it too
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                raw.transport.abort()
        finally:
            log.wakeups.discard(wake)
            self.watchers -= 1
        return resp
