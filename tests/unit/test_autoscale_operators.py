"""Typed model operators (by type and phase, diffusion stages, MoE experts): API validation, what the
RayService deploys, and the feasibility checks on what is actually deployed (issue 10; issue 12 defects)."""

from __future__ import annotations

import time

import pytest
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from gensched.api import GenerativeJobSpec, format_validation_error
from gensched.api.crdgen import generativejob_crd
from gensched.autoscale import operator_plan, render_rayservice
from gensched.autoscale.feasibility import GpuType, check_serve, worker_gpu_memory_gib
from tests.harness.tools import ROOT

H100 = [GpuType("NVIDIA-H100-80GB-HBM3", 80.0)]
T4 = [GpuType("Tesla-T4", 15.0)]
EXAMPLE = yaml.safe_load((ROOT / "workloads/examples/serve-llama-operators.yaml").read_text())["spec"]


def job(operators: list[dict], **serve: object) -> dict:
    return {"mode": "Serve", "model": {"name": "m", "parametersBillions": 7, "image": "i", "layers": 32},
            "resources": {"gpus": 1},
            "serve": {"slo": {"ttftMs": 1000, "tbtMs": 100}, "operators": operators, **serve}}


def problems(doc: dict) -> list[str]:
    try:
        GenerativeJobSpec.model_validate(doc)
    except ValidationError as exc:
        return [str(e) for e in format_validation_error(exc)]
    return []


LLM_TYPED = [{"name": "attn", "type": "Attention"}, {"name": "ffn", "type": "FFN"},
             {"name": "emb", "type": "Embedding"}]
DIFFUSION = [{"name": "clip", "type": "TextEncoder"}, {"name": "unet", "type": "Denoiser"},
             {"name": "vae", "type": "VAEDecoder"}, {"name": "control", "type": "ControlNet"}]


def test_typed_operators_are_accepted_and_imply_the_family() -> None:
    assert GenerativeJobSpec.model_validate(job(LLM_TYPED)).serve.model_family() == "DenseLM"
    assert GenerativeJobSpec.model_validate(job(DIFFUSION)).serve.model_family() == "Diffusion"
    moe = [{"name": "attn", "type": "Attention"}, {"name": "emb", "type": "Embedding"},
           {"name": "hot", "type": "Experts", "experts": "0-1"}, {"name": "cold", "type": "Experts", "experts": "2-7"}]
    assert GenerativeJobSpec.model_validate(job(moe)).serve.model_family() == "MoE"
    pd = [{"name": "prefill", "type": "Model", "phase": "Prefill"},
          {"name": "decode", "type": "Model", "phase": "Decode"}]
    assert GenerativeJobSpec.model_validate(job(pd)).serve.is_pipeline() is False
    stages = [{"name": "a", "layers": "0-15"}, {"name": "b", "layers": "16-31"}]  # pipeline stages stay
    assert GenerativeJobSpec.model_validate(job(stages)).serve.is_pipeline()


@pytest.mark.parametrize(("operators", "serve", "field", "words"), [
    ([{"name": "a", "type": "Attention"}, {"name": "x", "type": "Experts"}, {"name": "e", "type": "Embedding"}],
     {"family": "DenseLM"}, "spec.serve", "serve.operators[x].type: Experts is not an operator of a DenseLM"),
    ([{"name": "u", "type": "Denoiser"}, {"name": "v", "type": "VAEDecoder"}], {}, "spec.serve",
     "missing TextEncoder"),
    ([{"name": "p", "type": "Model", "phase": "Prefill"}], {}, "spec.serve", "no Model operator serves the Decode"),
    ([*LLM_TYPED, {"name": "s", "layers": "0-3"}], {}, "spec.serve", "cannot be mixed"),
    ([{"name": "u", "type": "Denoiser", "layers": "0-3"}], {}, "spec.serve.operators[0]", "remove layers"),
    ([{"name": "a", "type": "Attention"}, {"name": "e", "type": "Embedding"},
      {"name": "x", "type": "Experts", "experts": "0-5"}], {}, "spec.serve", "expert(s) 6-7 in no Experts operator"),
    ([*DIFFUSION[:3], {"name": "t2", "type": "TextEncoder", "phase": "Decode"}], {}, "spec.serve",
     "phases are for language models"),
    ([{"name": "x"}], {}, "spec.serve.operators[0]", "give a type"),
])
def test_bad_typed_operators_name_the_field_and_the_fix(operators: list[dict], serve: dict, field: str,
                                                        words: str) -> None:
    found = problems(job(operators, **serve))
    assert any(p.startswith(field + ":") and words in p for p in found), found


def test_a_huge_layer_range_is_refused_at_once_naming_the_field() -> None:
    """Issue 12: layers '0-99999999999999999999' used to pass validation and hang the job."""
    doc = job([{"name": "a", "layers": "0-99999999999999999999"}])
    del doc["model"]["layers"]  # without model.layers nothing else catches it
    t0 = time.process_time()
    found = problems(doc)
    assert time.process_time() - t0 < 1.0  # no range of 10^20 layers is ever built
    assert found and found[0].startswith("spec.serve.operators[0]:") and "layers" in found[0]
    assert "within 0-1023" in found[0]
    # ... and the API server refuses it too (the CRD bounds the string).
    schema = generativejob_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    layers = schema["properties"]["spec"]["properties"]["serve"]["properties"]["operators"]["items"]["properties"][
        "layers"]
    assert layers["maxLength"] == 9 and "{1,4}" in layers["pattern"]


def test_rayservice_deploys_typed_operators_with_their_type_and_weight_shares() -> None:
    spec = GenerativeJobSpec.model_validate(job(DIFFUSION))
    plans = {p.name: p for p in operator_plan(spec)}
    assert plans["unet"].type == "Denoiser" and plans["unet"].weight_share == pytest.approx(0.81)
    assert plans["unet"].gpus == pytest.approx(0.81) and plans["vae"].gpus == pytest.approx(0.07)
    manifest = render_rayservice("sd", "default", spec, {})
    config = ServeDeploySchema.model_validate(yaml.safe_load(manifest["spec"]["serveConfigV2"]))
    app = config.applications[0]
    assert app.args["family"] == "Diffusion"
    assert [o["type"] for o in app.args["operators"]] == ["TextEncoder", "Denoiser", "VAEDecoder", "ControlNet"]
    assert {d.name: d.user_config for d in app.deployments if d.name != "Ingress"}["unet"] == {"type": "Denoiser"}
    moe = job([{"name": "attn", "type": "Attention"}, {"name": "emb", "type": "Embedding"},
               {"name": "hot", "type": "Experts", "experts": "0-1", "gpus": 0.25},
               {"name": "cold", "type": "Experts", "experts": "2-7"}])
    plans = {p.name: p for p in operator_plan(GenerativeJobSpec.model_validate(moe))}
    assert plans["hot"].experts == (0, 1) and plans["hot"].gpus == 0.25
    assert plans["cold"].weight_share == pytest.approx(0.96 * 6 / 8)
    assert plans["hot"].user_config() == {"type": "Experts", "experts": [0, 1]}


def test_fp32_70b_on_one_80gb_gpu_is_not_feasible() -> None:
    """Issue 12: the check assumed 8 GPUs per replica while the deployment used resources.gpus (1)."""
    doc = job([])
    doc["model"].update(parametersBillions=70, precision="fp32", layers=80)
    found = check_serve(GenerativeJobSpec.model_validate(doc), H100)
    assert found and found[0].reason == "ModelTooLarge"
    assert "313.9 GiB" in found[0].message and "split it into at least 4 operators" in found[0].message
    doc["resources"]["gpus"] = 4  # a 4-GPU replica cannot start on the one-GPU Ray workers either
    found = check_serve(GenerativeJobSpec.model_validate(doc), H100)
    assert found and "each Ray worker has one GPU" in found[0].message
    doc["resources"]["gpus"] = 1
    doc["model"]["precision"] = "int8"  # the fix it names works
    assert [p.reason for p in check_serve(GenerativeJobSpec.model_validate(doc), H100)] == []


def test_the_shipped_llama_example_does_not_fit_a_t4_but_fits_an_h100() -> None:
    """Issue 12: 16.65 GiB split 0.25 / 0.5 / 0.25 of a 15 GB T4 was accepted."""
    spec = GenerativeJobSpec.model_validate(EXAMPLE)
    on_t4 = check_serve(spec, T4)
    assert {p.reason for p in on_t4} == {"ModelTooLarge"}
    assert any("operator middle needs 8.8 GiB" in p.message and "serve.operators[middle].gpus to 0.59" in p.message
               for p in on_t4)
    assert check_serve(spec, H100) == []
    # A worker GPU must hold every operator's replica in its share: need / share, for the packing engine.
    assert worker_gpu_memory_gib(spec) == pytest.approx(19.65)
    # Only the GPUs the job may land on count: a cluster with H100s does not help a T4-only job.
    pinned = GenerativeJobSpec.model_validate({**EXAMPLE, "resources": {"gpus": 1, "gpuModels": ["Tesla-T4"]}})
    assert check_serve(pinned, T4 + H100) and check_serve(pinned, H100) == []  # no T4 here: placement says why


def test_tbt_floor_counts_only_decoding_operators() -> None:
    pd = job([{"name": "prefill", "type": "Model", "phase": "Prefill"},
              {"name": "decode", "type": "Model", "phase": "Decode"}])
    pd["serve"]["slo"]["tbtMs"] = 5
    found = check_serve(GenerativeJobSpec.model_validate(pd), H100)
    assert [p.reason for p in found] == ["SLOUnreachable"]
    assert "5.2 ms per token" in found[0].message  # 14 GB once per token at 2.68 TB/s, not twice
    pd["serve"]["slo"]["tbtMs"] = 10  # both phases counted would need 10.4 ms
    assert check_serve(GenerativeJobSpec.model_validate(pd), H100) == []
