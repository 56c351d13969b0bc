"""``gensched explain FILE...``: check manifests offline and say what gensched would do with them.

Admins and users get the same messages the operator would put in status,
before anything touches a cluster. A file that cannot be used (missing, not YAML, empty, a
document that is not one object) is one line on stderr and exit status 2; invalid objects are
reported on stdout with exit status 1; 0 means every object is valid.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import ValidationError

from gensched.api import GenerativeJobSpec, SchedulingPolicySpec, format_validation_error
from gensched.api.durations import parse_duration, resolve_deadline
from gensched.api.errors import bounded, one_line, show
from gensched.autoscale import operator_plan
from gensched.autoscale.feasibility import GpuType, check_serve
from gensched.autoscale.profiles import ModelProfile, ProfileError
from gensched.autoscale.targets import operator_targets
from gensched.packing.requests import request_for
from gensched.timing import decide_start


def _kind_and_name(doc: dict) -> tuple[str | None, str]:
    kind = doc.get("kind") if isinstance(doc.get("kind"), str) else None
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name = meta.get("name", "<unnamed>")
    return kind, (one_line(name, 100) if isinstance(name, str) else show(name))


def default_policy(docs: list[dict]) -> tuple[SchedulingPolicySpec, str, str | None]:
    """The valid policy marked default among ``docs`` (several: the first by name, as the operator
    resolves them, with a warning), else the built-in defaults."""
    found: list[tuple[str, SchedulingPolicySpec]] = []
    for doc in docs:
        kind, name = _kind_and_name(doc)
        if kind != "SchedulingPolicy":
            continue
        try:
            spec = SchedulingPolicySpec.model_validate(doc.get("spec") or {})
        except ValidationError:
            continue
        if spec.default:
            found.append((name, spec))
    if not found:
        return SchedulingPolicySpec(), "built-in defaults", None
    found.sort(key=lambda x: x[0])
    warning = None if len(found) == 1 else (
        f"warning: {len(found)} policies are marked default ({bounded(', '.join(n for n, _ in found), 200)}): "
        f"jobs without policyRef use {found[0][0]}; mark only one default")
    return found[0][1], found[0][0], warning


def explain_documents(docs: list[dict], now: datetime | None = None, profile: ModelProfile | None = None,
                      policies_from: list[dict] | None = None) -> tuple[list[str], int]:
    """Lines to print and the number of invalid documents (``profile``: preview per-operator sizing).

    Jobs are explained under the default policy found in ``policies_from`` (default: ``docs``)."""
    now = now or datetime.now(UTC)
    lines: list[str] = []
    policy, policy_name, warning = default_policy(docs if policies_from is None else policies_from)
    if warning and policies_from is None:
        lines.append(warning)
    invalid = 0
    for doc in docs:
        kind, name = _kind_and_name(doc)
        model = {"GenerativeJob": GenerativeJobSpec, "SchedulingPolicy": SchedulingPolicySpec}.get(kind or "")
        if model is None:
            shown = show(doc.get("kind"), 60) if doc.get("kind") is not None else "no kind"
            lines.append(f"{shown}/{name}: not a gensched object (kind must be GenerativeJob or SchedulingPolicy)")
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
            try:
                lines += _job_lines(name, spec, policy, policy_name, now, profile)
            except (ValueError, ArithmeticError, LookupError, TypeError) as exc:  # a bug: say so, do not crash
                lines.append(f"  could not work out the decisions ({one_line(exc.__class__.__name__)}: "
                             f"{one_line(exc, 300)}): please report this")
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


class ManifestError(ValueError):
    """A file explain cannot use; the message names the file and the fix (one line)."""


def load_manifests(path: Path) -> list[dict]:
    """The objects in a YAML file (``kind: List`` is unpacked); ManifestError when there are none
    or a document is not one object."""
    where = bounded(str(path), 200)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{where}: no such file: check the path") from None
    except IsADirectoryError:
        raise ManifestError(f"{where}: is a directory: pass the YAML files in it (e.g. {where}/*.yaml)") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{where}: not UTF-8 text: pass a YAML manifest") from None
    except OSError as exc:
        raise ManifestError(f"{where}: cannot read it ({exc.strerror or exc.__class__.__name__})") from None
    try:
        raw = list(yaml.safe_load_all(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ManifestError(f"{where}: not valid YAML ({at}{one_line(exc.problem or 'syntax error', 200)}): "
                            "fix the YAML") from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: an integer with thousands of digits
        raise ManifestError(f"{where}: not valid YAML ({one_line(exc, 200)}): fix the YAML") from None
    docs: list[dict] = []
    for i, doc in enumerate(raw, start=1):
        if doc is None:
            continue
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            items = doc["items"]
        else:
            items = [doc]
        for item in items:
            if not isinstance(item, dict):
                kind = "a list" if isinstance(item, list) else f"a {type(item).__name__}"
                raise ManifestError(f"{where}: document {i} is {kind}, not an object: write one object (apiVersion, "
                                    "kind, metadata, spec) per document, separated by '---'")
            docs.append(item)
    if not docs:
        raise ManifestError(f"{where}: no objects in the file: add a GenerativeJob or SchedulingPolicy manifest")
    return docs


def explain_files(paths: list[Path], profile_path: Path | None = None) -> int:
    """Explain every object of every file; a policy marked default in any file applies to the jobs
    of all of them (the README passes a glob). Exit status: 0 all valid, 1 some invalid, 2 a file
    (or the profile) cannot be used, reported as one line each on stderr."""
    loaded: list[tuple[Path, list[dict]]] = []
    bad = 0
    for path in paths:
        try:
            loaded.append((path, load_manifests(path)))
        except ManifestError as exc:
            print(f"gensched explain: {exc}", file=sys.stderr)
            bad += 1
    profile = None
    if profile_path is not None:
        try:
            profile = ModelProfile.from_json(profile_path.read_text(), where=f"profile {profile_path}")
        except (OSError, ProfileError, ValueError) as exc:
            print(f"gensched explain: --profile {bounded(str(profile_path), 200)}: {one_line(exc, 400)}",
                  file=sys.stderr)
            bad += 1
    if bad:
        return 2
    every = [d for _, docs in loaded for d in docs]
    _, _, warning = default_policy(every)
    if warning:
        print(warning)
    invalid = 0
    for path, docs in loaded:
        lines, n = explain_documents(docs, profile=profile, policies_from=every)
        if len(loaded) > 1:
            print(f"# {bounded(str(path), 200)}")
        print("\n".join(lines))
        invalid += n
    return 1 if invalid else 0


def explain_file(path: Path, profile_path: Path | None = None) -> int:
    """One file (kept for callers of the single-file form)."""
    return explain_files([path], profile_path)
