"""``gensched explain FILE``: check manifests offline and say what gensched would do with them.

Admins and users get the same messages the operator would put in status,
before anything touches a cluster.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import ValidationError

from gensched.api import GenerativeJobSpec, SchedulingPolicySpec, format_validation_error
from gensched.api.durations import parse_duration, resolve_deadline
from gensched.autoscale import operator_plan
from gensched.autoscale.feasibility import GpuType, check_serve
from gensched.autoscale.profiles import ModelProfile, ProfileError
from gensched.autoscale.targets import operator_targets
from gensched.packing.requests import request_for
from gensched.timing import decide_start


def explain_documents(docs: list[dict], now: datetime | None = None, profile: ModelProfile | None = None
                      ) -> tuple[list[str], int]:
    """Lines to print and the number of invalid documents (``profile``: preview per-operator sizing)."""
    now = now or datetime.now(UTC)
    lines: list[str] = []
    policy = SchedulingPolicySpec()
    policy_name = "built-in defaults"
    for doc in docs:  # policies first, so jobs are explained under the file's default policy
        if doc.get("kind") == "SchedulingPolicy":
            try:
                spec = SchedulingPolicySpec.model_validate(doc.get("spec") or {})
            except ValidationError:
                continue
            if spec.default:
                policy, policy_name = spec, doc.get("metadata", {}).get("name", "?")
    invalid = 0
    for doc in docs:
        kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name", "<unnamed>")
        model = {"GenerativeJob": GenerativeJobSpec, "SchedulingPolicy": SchedulingPolicySpec}.get(kind or "")
        if model is None:
            lines.append(f"{kind}/{name}: not a gensched object (kind must be GenerativeJob or SchedulingPolicy)")
            invalid += 1
            continue
        try:
            spec = model.model_validate(doc.get("spec") or {})
        except ValidationError as exc:
            invalid += 1
            lines.append(f"{kind}/{name}: INVALID")
            lines += [f"  - {e}" for e in format_validation_error(exc)]
            continue
        lines.append(f"{kind}/{name}: valid")
        if isinstance(spec, GenerativeJobSpec):
            lines += _job_lines(name, spec, policy, policy_name, now, profile)
        else:
            lines.append(f"  packing {spec.packing.strategy}, timing {spec.timing.mode}, "
                         f"autoscaling {spec.autoscaling.granularity}{' (default policy)' if spec.default else ''}")
    return lines, invalid


def _job_lines(name: str, spec: GenerativeJobSpec, policy: SchedulingPolicySpec, policy_name: str,
               now: datetime, profile: ModelProfile | None = None) -> list[str]:
    req = request_for(name, spec)
    share = f"{req.whole_gpus} whole GPU(s)" if req.whole_gpus else f"{req.gpu_milli} milli-GPU of one GPU"
    out = [f"  {spec.mode}: {spec.model.name} {spec.model.parameters_billions:g}B {spec.model.precision} "
           f"needs {spec.gpu_memory_gib():.1f} GiB per GPU on {share}"
           + (f", models {list(req.gpu_models)}" if req.gpu_models else "")]
    if spec.serve is not None:
        for gpu in (GpuType("NVIDIA-A100-SXM4-80GB", 80.0), GpuType("NVIDIA-H100-80GB-HBM3", 80.0)):
            problems = check_serve(spec, [gpu])
            verdict = "servable" if not problems else "; ".join(f"{p.reason}: {p.message}" for p in problems)
            out.append(f"  on {gpu.model} nodes: {verdict}")
        plans = operator_plan(spec)
        out.append("  model operators: " + ", ".join(
            f"{p.name} (layers {p.first_layer}-{p.last_layer}, {p.gpus:g} GPU/replica, {p.min_replicas}-"
            f"{p.max_replicas} replicas)" for p in plans))
        out += _sizing_lines(spec, plans, policy, profile)
    if spec.batch is not None:
        deadline = resolve_deadline(spec.batch.deadline, now) if spec.batch.deadline else None
        est = parse_duration(spec.batch.estimated_duration) if spec.batch.estimated_duration else None
        d = decide_start(now, policy.timing, deadline, est)
        out.append(f"  timing under {policy_name}: {d.reason}")
        if d.warning:
            out.append(f"  warning: {d.warning}")
    return out


def _sizing_lines(spec: GenerativeJobSpec, plans: list, policy: SchedulingPolicySpec,
                  profile: ModelProfile | None) -> list[str]:
    """How each operator will be sized: from a profile (previewed when given) or the policy's target."""
    assert spec.serve is not None
    ref = spec.serve.profile
    if profile is None:
        if ref is not None:
            return [f"  sizing: from the profile in ConfigMap {ref.config_map} (key {ref.key}); pass "
                    "--profile FILE to preview it"]
        return [f"  sizing: every operator for {policy.autoscaling.target_ongoing_requests:g} requests in flight per "
                "replica (the policy's targetOngoingRequests; set spec.serve.profile to size on measured latency)"]
    ctx = ref.context_tokens if ref is not None else 1024
    try:
        targets = operator_targets(profile, {p.name: p.gpus for p in plans}, spec.serve.slo.tbt_ms, ctx)
    except ProfileError as exc:
        return [f"  sizing: the profile cannot be used: {exc}"]
    return [f"  sizing from the profile ({ctx} context tokens): " + ", ".join(
        f"{t.name} {t.target_ongoing} in flight per replica within {t.budget_ms:.1f} ms" for t in targets.values())]


def explain_file(path: Path, profile_path: Path | None = None) -> int:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        print(f"cannot read {path}: {exc}")
        return 2
    profile = None
    if profile_path is not None:
        try:
            profile = ModelProfile.from_json(profile_path.read_text(), where=f"profile {profile_path}")
        except (OSError, ProfileError) as exc:
            print(f"cannot use {profile_path}: {exc}")
            return 2
    lines, invalid = explain_documents(docs, profile=profile)
    print("\n".join(lines))
    return 1 if invalid else 0
