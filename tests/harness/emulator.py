"""A Kubernetes API emulator good enough for kopf's real loop and real kubectl.

Built on kmock's ``KubernetesEmulator`` (its aiohttp ``Server``, request parsing,
discovery scaffold and Status errors) with the object store replaced, because
stock kmock 0.8 breaks kopf and kubectl: objects get no resourceVersion, uid or
creationTimestamp; LISTs lack kind/apiVersion; WATCH ignores resourceVersion
and replays everything as ADDED; watch streams are served as octet-stream;
generateName is unsupported. This store adds those plus PUT, the ``/status``
subresource kept apart from spec, generation bumps, optimistic concurrency,
finalizers and ownerReference garbage collection, label/field selectors,
CRD registration with schema validation and defaulting, and Table output for
``kubectl get`` printer columns.

Known gaps (real API server behaviour this does not emulate) are listed in
``docs/testing.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import re
import string
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
HISTORY = 20_000


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


# ---------------------------------------------------------------- the store
@attrs.define(kw_only=True)
class Emulator(KubernetesEmulator):
    """In-memory Kubernetes API served over HTTP on 127.0.0.1 (see module docstring)."""

    kinds: dict[tuple[str, str], Kind] = attrs.field(factory=dict)
    store: dict[tuple[str, str, str | None, str], dict] = attrs.field(factory=dict)
    rv: int = 0
    history: deque = attrs.field(factory=lambda: deque(maxlen=HISTORY))
    changed: asyncio.Condition | None = None
    stopping: bool = False

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for group, version, plural, kind, namespaced, status, short in BUILTINS:
            self.register(Kind(group, version, plural, kind, namespaced, status), short)
        for ns in ("default", "kube-system"):  # what every cluster starts with
            self.rv += 1
            self.store[("", "namespaces", None, ns)] = {
                "apiVersion": "v1", "kind": "Namespace", "status": {"phase": "Active"},
                "metadata": {"name": ns, "uid": str(uuid.uuid4()), "creationTimestamp": _now(),
                             "resourceVersion": str(self.rv), "generation": 1}}
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

    async def _admit(self, kind: Kind, operation: str, obj: dict, old: dict | None) -> None:
        if kind.plural == "validatingwebhookconfigurations":
            return
        configs = self.list("admissionregistration.k8s.io", "validatingwebhookconfigurations")
        if configs:
            await call_validating_webhooks(configs, kind, operation, obj, old)

    # -- events
    async def _emit(self, kind: Kind, type_: str, obj: dict) -> None:
        self.history.append((int(obj["metadata"]["resourceVersion"]), kind.group, kind.plural, type_,
                             copy.deepcopy(obj)))
        if self.changed is None:
            self.changed = asyncio.Condition()
        async with self.changed:
            self.changed.notify_all()

    def _bump(self, obj: dict) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    # -- internal API, also used by the cluster stand-in
    def get(self, group: str, plural: str, namespace: str | None, name: str) -> dict | None:
        obj = self.store.get((group, plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, group: str, plural: str, namespace: str | None = None) -> list[dict]:
        return [copy.deepcopy(o) for (g, p, ns, _), o in sorted(self.store.items(), key=lambda kv: str(kv[0]))
                if g == group and p == plural and (namespace is None or ns == namespace)]

    def kind_of(self, group: str, plural: str) -> Kind:
        try:
            return self.kinds[(group, plural)]
        except KeyError:
            msg = f"the server could not find the requested resource ({plural})"
            raise _status_error(404, "NotFound", msg) from None

    async def create(self, kind: Kind, namespace: str | None, body: dict, strict: bool = False) -> dict:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise _status_error(422, "Invalid", f"{kind.kind} is invalid: metadata.name: Required value", kind)
            while True:
                meta["name"] = prefix + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
                if (kind.group, kind.plural, namespace, meta["name"]) not in self.store:
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
        key = (kind.group, kind.plural, namespace, name)
        if key in self.store:
            raise _status_error(409, "AlreadyExists", f'{kind.qualified} "{name}" already exists', kind, name)
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        if kind.status_subresource and kind.group not in ("", "batch", "apiextensions.k8s.io"):
            obj.pop("status", None)
        validate_against(kind, obj, strict)
        await self._admit(kind, "CREATE", obj, None)
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
            self._register_crd(obj)
        self._bump(obj)
        self.store[key] = obj
        await self._emit(kind, "ADDED", obj)
        return copy.deepcopy(obj)

    async def replace(self, kind: Kind, namespace: str | None, name: str, new: dict, subresource: str | None,
                      strict: bool = False) -> dict:
        """Store ``new`` as the next version of an object: the one path every write goes through."""
        key = (kind.group, kind.plural, namespace if kind.namespaced else None, name)
        cur = self.store.get(key)
        if cur is None:
            raise _status_error(404, "NotFound", f'{kind.qualified} "{name}" not found', kind, name)
        given_rv = (new.get("metadata") or {}).get("resourceVersion")
        if given_rv and given_rv != cur["metadata"]["resourceVersion"]:
            raise _status_error(409, "Conflict", f'Operation cannot be fulfilled on {kind.qualified} "{name}": '
                                "the object has been modified; please apply your changes to the latest version "
                                "and try again", kind, name)
        new = copy.deepcopy(new)
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
            validate_against(kind, result, strict)
            if result.get("spec") != cur.get("spec") or result["metadata"] != cur["metadata"]:
                await self._admit(kind, "UPDATE", result, cur)
        result["apiVersion"], result["kind"] = kind.api_version, kind.kind
        result["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        if result == cur:
            return copy.deepcopy(cur)  # no-op writes keep the resourceVersion and emit nothing
        spec_of = lambda o: {k: v for k, v in o.items() if k not in ("metadata", "status")}  # noqa: E731
        if spec_of(result) != spec_of(cur):
            result["metadata"]["generation"] = cur["metadata"].get("generation", 1) + 1
        self._bump(result)
        self.store[key] = result
        if kind.plural == "customresourcedefinitions":
            self._register_crd(result)
        if result["metadata"].get("deletionTimestamp") and not result["metadata"].get("finalizers"):
            await self._finally_delete(kind, key)
        else:
            await self._emit(kind, "MODIFIED", result)
        return copy.deepcopy(result)

    async def patch(self, kind: Kind, namespace: str | None, name: str, patch: Any, content_type: str,
                    subresource: str | None = None, strict: bool = False) -> dict:
        cur = self.get(kind.group, kind.plural, namespace if kind.namespaced else None, name)
        if cur is None:
            raise _status_error(404, "NotFound", f'{kind.qualified} "{name}" not found', kind, name)
        try:
            if "json-patch" in content_type:
                new = jsonpatch.apply_patch(cur, patch)
            elif "strategic-merge-patch" in content_type:
                new = strategic_merge_patch(cur, patch)
            else:
                new = merge_patch(cur, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            code = 409 if isinstance(exc, jsonpatch.JsonPatchTestFailed) else 422
            raise _status_error(code, "Conflict" if code == 409 else "Invalid", f"the patch failed: {exc}",
                                kind, name) from None
        if "json-patch" not in content_type:
            # Merge patches carry a resourceVersion only to ask for optimistic concurrency.
            given = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else None
            new.setdefault("metadata", {})["resourceVersion"] = given or cur["metadata"]["resourceVersion"]
        return await self.replace(kind, namespace, name, new, subresource, strict)

    async def delete(self, kind: Kind, namespace: str | None, name: str, propagation: str = "Background") -> dict:
        key = (kind.group, kind.plural, namespace if kind.namespaced else None, name)
        cur = self.store.get(key)
        if cur is None:
            raise _status_error(404, "NotFound", f'{kind.qualified} "{name}" not found', kind, name)
        if cur["metadata"].get("finalizers"):
            if not cur["metadata"].get("deletionTimestamp"):
                cur = copy.deepcopy(cur)
                cur["metadata"]["deletionTimestamp"] = _now()
                self._bump(cur)
                self.store[key] = cur
                await self._emit(kind, "MODIFIED", cur)
            return copy.deepcopy(cur)
        return await self._finally_delete(kind, key, orphan=propagation == "Orphan")

    async def _finally_delete(self, kind: Kind, key: tuple, orphan: bool = False) -> dict:
        obj = self.store.pop(key)
        self._bump(obj)
        await self._emit(kind, "DELETED", obj)
        if not orphan:
            await self._collect_garbage(obj["metadata"]["uid"])
        return copy.deepcopy(obj)

    async def _collect_garbage(self, owner_uid: str) -> None:
        """Delete dependents whose ownerReferences point at a deleted owner (background propagation)."""
        for (g, p, ns, n), obj in list(self.store.items()):
            refs = obj["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == owner_uid for r in refs) and (g, p, ns, n) in self.store:
                await self.delete(self.kinds[(g, p)], ns, n)

    # -- HTTP
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
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
        method = raw.method.upper()
        name, sub = request.name, request.subresource
        if sub not in (None, "status"):
            raise _status_error(404, "NotFound", f"subresource {sub} is not served by the emulator", kind, name)
        if params.get("watch") in ("true", "1"):
            return await self._watch(kind, request, params)
        if method == "GET" and name is None:
            return self._json(self._list_payload(kind, request, params))
        if method == "GET":
            obj = self.get(kind.group, kind.plural, ns, name)
            if obj is None:
                raise _status_error(404, "NotFound", f'{kind.qualified} "{name}" not found', kind, name)
            if "as=Table" in raw.headers.get("Accept", ""):
                return self._json(self._table(kind, [obj], params))
            return self._json(obj)
        if method == "POST" and name is None:
            return self._json(await self.create(kind, request.namespace, request.data or {}, strict), 201)
        if method == "PUT" and name is not None:
            return self._json(await self.replace(kind, ns, name, request.data or {}, sub, strict))
        if method == "PATCH" and name is not None:
            ctype = raw.headers.get("Content-Type", "application/merge-patch+json")
            return self._json(await self.patch(kind, ns, name, request.data, ctype, sub, strict))
        if method == "DELETE" and name is not None:
            body = request.data if isinstance(request.data, dict) else {}
            propagation = body.get("propagationPolicy") or params.get("propagationPolicy") or "Background"
            return self._json(await self.delete(kind, ns, name, propagation))
        raise _status_error(405, "MethodNotAllowed", f"{method} is not supported on this path", kind, name)

    @staticmethod
    def _json(payload: dict, status: int = 200) -> aiohttp.web.Response:
        return aiohttp.web.json_response(payload, status=status)

    def _select(self, kind: Kind, request: rendering.Request, params: dict) -> list[dict]:
        ns = request.namespace if kind.namespaced else None
        objs = self.list(kind.group, kind.plural, ns)
        if request.name:
            objs = [o for o in objs if o["metadata"]["name"] == request.name]
        return [o for o in objs if self._matches(o, params)]

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
        raw = request._raw_request
        assert raw is not None
        if self.changed is None:
            self.changed = asyncio.Condition()
        since = params.get("resourceVersion") or "0"
        if not since.isdigit():
            raise _status_error(400, "BadRequest", f"invalid resourceVersion {since!r}", kind)
        since_rv = int(since)
        ns = request.namespace if kind.namespaced else None
        timeout = float(params.get("timeoutSeconds") or 0) or None
        resp = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(raw)

        def wanted(obj: dict) -> bool:
            m = obj["metadata"]
            if ns is not None and m.get("namespace") != ns:
                return False
            if request.name and m["name"] != request.name:
                return False
            return self._matches(obj, params)

        async def send(type_: str, obj: dict) -> None:
            await resp.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        try:
            initial = params.get("sendInitialEvents") == "true"
            if since_rv == 0 or initial:
                for obj in self._select(kind, request, params):
                    await send("ADDED", obj)
                cursor = self.rv
                if initial:  # streaming list (WatchList): tell the client the snapshot is complete
                    await send("BOOKMARK", {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": {
                        "resourceVersion": str(cursor), "annotations": {"k8s.io/initial-events-end": "true"}}})
            else:
                oldest = self.history[0][0] if self.history else self.rv + 1
                if since_rv < oldest - 1 and since_rv < self.rv:
                    gone = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                            "reason": "Expired", "message": f"too old resource version: {since_rv} ({oldest})"}
                    await resp.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
                    return resp
                cursor = since_rv
            while not self.stopping:
                fresh = []
                for item in reversed(self.history):
                    if item[0] <= cursor:
                        break
                    fresh.append(item)
                for _rv, g, p, type_, obj in reversed(fresh):
                    if g == kind.group and p == kind.plural and wanted(obj):
                        await send(type_, obj)
                cursor = max(cursor, self.rv)
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                async with self.changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.changed.wait(), timeout=min(remaining or 1.0, 1.0))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp
