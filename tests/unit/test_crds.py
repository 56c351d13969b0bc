"""The committed CRDs are exactly what the models generate, structural, and accept the examples."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from gensched.api import GenerativeJobSpec, SchedulingPolicySpec
from gensched.api.crdgen import crd_files

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("folder", ["crds", "charts/gensched/crds"])
def test_committed_crds_match_the_models(folder: str) -> None:
    for name, text in crd_files().items():
        committed = ROOT / folder / name
        assert committed.exists(), f"{committed} missing: run `gensched crds`"
        assert committed.read_text() == text, f"{committed} is stale: run `gensched crds` and commit"


def _walk(node: object, path: str = "") -> list[str]:
    """Paths breaking the structural-schema rules Kubernetes enforces."""
    bad: list[str] = []
    if isinstance(node, dict):
        for key in ("$ref", "anyOf", "oneOf", "allOf", "$defs", "title"):
            if key in node:
                bad.append(f"{path}.{key}")
        if "properties" in node and "additionalProperties" in node:
            bad.append(f"{path}: properties with additionalProperties")
        if "properties" in node and node.get("type") != "object":
            bad.append(f"{path}: properties without type: object")
        for k, v in node.items():
            bad += _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            bad += _walk(v, f"{path}[{i}]")
    return bad


def _schema(name: str) -> dict:
    crd = yaml.safe_load(crd_files()[name].split("\n", 1)[1])
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("name", sorted(crd_files()))
def test_schemas_are_structural(name: str) -> None:
    assert _walk(_schema(name)) == []


def test_generativejob_crd_has_status_columns_and_cel() -> None:
    crd = yaml.safe_load(crd_files()["gensched.io_generativejobs.yaml"].split("\n", 1)[1])
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:7] == ["Mode", "Phase", "GPUs", "Node", "Queue", "Waiting", "Start"]
    assert crd["spec"]["names"]["shortNames"] == ["gj"] and crd["spec"]["names"]["categories"] == ["gensched"]
    rules = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    assert any("has(self.batch)" in r["rule"] for r in rules)
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["properties"]["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_examples_validate_against_crd_schema_and_models() -> None:
    schemas = {"GenerativeJob": _schema("gensched.io_generativejobs.yaml"),
               "SchedulingPolicy": _schema("gensched.io_schedulingpolicies.yaml")}
    models = {"GenerativeJob": GenerativeJobSpec, "SchedulingPolicy": SchedulingPolicySpec}
    files = sorted((ROOT / "workloads" / "examples").glob("*.yaml"))
    assert len(files) >= 4
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            jsonschema.Draft4Validator(schemas[doc["kind"]]).validate(doc)
            models[doc["kind"]].model_validate(doc["spec"])


def test_schema_rejects_what_the_models_reject_at_the_boundary() -> None:
    schema = _schema("gensched.io_generativejobs.yaml")
    doc = yaml.safe_load((ROOT / "workloads/examples/batch-llama-int4.yaml").read_text())
    doc["spec"]["resources"]["gpus"] = 0
    with pytest.raises(jsonschema.ValidationError, match="minimum"):
        jsonschema.Draft4Validator(schema).validate(doc)


def test_every_field_of_both_crds_has_a_description_for_kubectl_explain() -> None:
    missing = []
    for name, text in crd_files().items():
        crd = yaml.safe_load(text.split("\n", 1)[1]) if text.startswith("#") else yaml.safe_load(text)
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

        def walk(node: dict, path: str, name: str = name) -> None:
            for key, sub in (node.get("properties") or {}).items():
                if "description" not in sub:
                    missing.append(f"{name}: {path}.{key}")
                walk(sub, f"{path}.{key}")
                if "items" in sub:
                    walk(sub["items"], f"{path}.{key}[]")
        walk(schema, "")
    assert missing == []


def test_map_fields_keep_their_values_schema_so_no_api_server_prunes_them() -> None:
    # an object with neither properties nor additionalProperties is pruned to {} by a real API server
    status = _schema("gensched.io_generativejobs.yaml")["properties"]["status"]["properties"]
    assert status["operatorReplicas"]["additionalProperties"] == {"type": "integer"}
    states = status["autoscaling"]["properties"]["states"]["additionalProperties"]
    assert states.get("x-kubernetes-preserve-unknown-fields") is True

    def objects_that_would_be_pruned(node: dict, path: str = "") -> list[str]:
        bad = []
        if node.get("type") == "object" and not ({"properties", "additionalProperties",
                                                  "x-kubernetes-preserve-unknown-fields"} & node.keys()):
            bad.append(path)
        for k, v in (node.get("properties") or {}).items():
            if path or k != "metadata":  # the root's metadata is the API server's own
                bad += objects_that_would_be_pruned(v, f"{path}.{k}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                bad += objects_that_would_be_pruned(node[key], f"{path}[{key}]")
        return bad

    for name in crd_files():
        assert objects_that_would_be_pruned(_schema(name)) == [], name
