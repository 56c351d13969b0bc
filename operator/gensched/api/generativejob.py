"""GenerativeJob: one piece of generative AI work (batch synthesis or online serving)."""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator, model_validator

from gensched.api.accounting import AccountingStatus, JobBudget
from gensched.api.base import KubeModel
from gensched.api.conditions import Condition
from gensched.api.durations import DURATION_PATTERN, MAX_JOB_SPAN, check_duration, parse_duration, resolve_deadline
from gensched.api.quantity import QUANTITY, parse_quantity
from gensched.api.sizing import model_memory_gib

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LAYER_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


class JobMode(StrEnum):
    BATCH = "Batch"
    SERVE = "Serve"


class Precision(StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    INT8 = "int8"
    INT4 = "int4"


class Phase(StrEnum):
    PENDING = "Pending"
    DEFERRED = "Deferred"
    PLACED = "Placed"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    INVALID = "Invalid"


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.INVALID})


class ModelSpec(KubeModel):
    """Which model runs, how big it is, and the container that runs it."""

    name: str = Field(min_length=1, description="Model name, e.g. llama-3-8b.")
    uri: str | None = Field(default=None, description="Where the weights live (s3://, pvc://, hf:// ...).")
    parameters_billions: float = Field(gt=0, le=10000, description="Model size in billions of parameters.")
    precision: Precision = Field(default=Precision.BF16, description="Numeric precision of the weights.")
    layers: int | None = Field(
        default=None, ge=1, le=1024,
        description="Number of transformer layers; needed to check serve.operators groupings.",
    )
    image: str = Field(min_length=1, description="Container image of the workload.")
    command: list[str] = Field(default_factory=list, description="Container command.")
    args: list[str] = Field(default_factory=list, description="Container arguments.")


class ResourcesSpec(KubeModel):
    """What one replica (batch: the job; serve: one whole-model replica) needs."""

    gpus: float = Field(
        gt=0, le=8,
        description="Whole GPUs (1..8, on one node) or a fraction of one GPU such as 0.25.",
    )
    gpu_memory_gib: float | None = Field(
        default=None, gt=0, le=1024, alias="gpuMemoryGiB",
        description="GPU memory needed; derived from model size x precision when absent.",
    )
    gpu_models: list[str] = Field(
        default_factory=list,
        description="Allowed GPU models (values of the nvidia.com/gpu.product node label); empty: any.",
    )
    cpu: str = Field(default="1", pattern=QUANTITY, max_length=64,
                     description="CPU request (Kubernetes quantity such as 500m, 2 or 1.5).")
    memory: str = Field(default="4Gi", pattern=QUANTITY, max_length=64,
                        description="Memory request (Kubernetes quantity such as 4Gi, 512Mi or 1e9).")

    @field_validator("cpu", "memory")
    @classmethod
    def _positive_quantity(cls, v: str) -> str:
        try:
            value = parse_quantity(v)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if value <= 0:
            raise ValueError(f"{v!r} must be above zero")
        if value > 10**18:
            raise ValueError(f"{v!r} is larger than any node")
        return v

    @field_validator("gpus")
    @classmethod
    def _whole_or_fraction(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError(
                f"{v} mixes whole and fractional GPUs: ask for a whole number (1..8) or a fraction below 1"
            )
        if v < 1 and round(v * 1000) < 1:
            raise ValueError(f"{v} is below the smallest share (0.001 of a GPU)")
        return v

    @property
    def whole_gpus(self) -> int:
        """GPUs taken entirely (0 for a shared fraction)."""
        return int(self.gpus) if self.gpus >= 1 else 0

    @property
    def gpu_milli(self) -> int:
        """Share of each GPU in thousandths: 1000 for whole GPUs."""
        return 1000 if self.gpus >= 1 else round(self.gpus * 1000)


class BatchSpec(KubeModel):
    """A batch synthesis run: read inputs, generate, write results."""

    input: str = Field(min_length=1, description="Input reference (path, bucket URI, dataset name).")
    output: str | None = Field(default=None, description="Where results go; default: next to the input.")
    items: int | None = Field(default=None, ge=1, description="Number of items to generate.")
    deadline: str | None = Field(
        default=None,
        description="When the results are due: RFC 3339 time (years 1970-8999), or a duration counted from "
                    "creation ('12h', at most 366d).",
    )
    estimated_duration: str | None = Field(
        default=None, pattern=DURATION_PATTERN,
        description="How long the run takes on its GPUs ('2h', at most 366d)."
    )
    interruptible: bool = Field(default=False, description="May be suspended and resumed (it checkpoints).")

    @field_validator("deadline")
    @classmethod
    def _deadline_format(cls, v: str | None) -> str | None:
        if v is not None:  # a duration up to 366d, or an RFC 3339 time in 1970..8999 (see api/durations.py)
            from datetime import UTC, datetime

            resolve_deadline(v, datetime.now(UTC))
        return v

    @field_validator("estimated_duration")
    @classmethod
    def _duration_positive(cls, v: str | None) -> str | None:
        if v is not None and check_duration(v, MAX_JOB_SPAN, "batch.estimatedDuration").total_seconds() <= 0:
            raise ValueError("must be longer than zero, e.g. '30m'")
        return v


class SLOSpec(KubeModel):
    """Latency objectives of a serving job."""

    ttft_ms: float = Field(gt=0, description="Time to first token, milliseconds, at the percentile.")
    tbt_ms: float = Field(gt=0, description="Time between tokens, milliseconds, at the percentile.")
    percentile: float = Field(default=99.0, gt=50, lt=100, description="Percentile the SLOs hold at.")


class OperatorType(StrEnum):
    """What a model operator holds. ``Layers`` is a pipeline stage (consecutive layers of any model);
    the others name an operator by the kind of work it does, which is what differs in load."""

    LAYERS = "Layers"  # consecutive layers (pipeline stage)
    MODEL = "Model"  # the whole model (with ``phase``: prefill/decode disaggregation)
    EMBEDDING = "Embedding"  # token embedding and LM head
    ATTENTION = "Attention"  # attention of every layer (and the norms, the MoE router); keeps the KV cache
    FFN = "FFN"  # dense feed-forward of every layer
    EXPERTS = "Experts"  # mixture-of-experts feed-forward: all experts, or the range in ``experts``
    TEXT_ENCODER = "TextEncoder"
    DENOISER = "Denoiser"  # UNet / DiT, every denoising step
    VAE_DECODER = "VAEDecoder"
    CONTROLNET = "ControlNet"  # adapter, shared by the workflows that use it
    LORA = "LoRA"  # adapter, shared by the workflows that use it


class OperatorPhase(StrEnum):
    PREFILL = "Prefill"
    DECODE = "Decode"


class ModelFamily(StrEnum):
    DENSE = "DenseLM"
    MOE = "MoE"
    DIFFUSION = "Diffusion"


_T = OperatorType
# Operator types each model family has, and what every typed split of it must contain.
FAMILY_TYPES: dict[str, tuple[str, ...]] = {
    ModelFamily.DENSE: (_T.LAYERS, _T.MODEL, _T.EMBEDDING, _T.ATTENTION, _T.FFN),
    ModelFamily.MOE: (_T.LAYERS, _T.MODEL, _T.EMBEDDING, _T.ATTENTION, _T.EXPERTS),
    ModelFamily.DIFFUSION: (_T.TEXT_ENCODER, _T.DENOISER, _T.VAE_DECODER, _T.CONTROLNET, _T.LORA),
}
REQUIRED_TYPES: dict[str, tuple[str, ...]] = {
    ModelFamily.DENSE: (_T.EMBEDDING, _T.ATTENTION, _T.FFN),
    ModelFamily.MOE: (_T.EMBEDDING, _T.ATTENTION, _T.EXPERTS),
    ModelFamily.DIFFUSION: (_T.TEXT_ENCODER, _T.DENOISER, _T.VAE_DECODER),
}
# Share of model.parametersBillions an operator of each type holds when it does not say
# (Llama-2-7B: embedding+head 4%, attention 32%, FFN 64%; Mixtral-8x7B: 1% / 3% / 96% experts;
# Stable Diffusion 1.5: CLIP text encoder 12%, UNet 81%, VAE decoder 7%, a ControlNet 34% more).
DEFAULT_WEIGHT_SHARE: dict[str, dict[str, float]] = {
    ModelFamily.DENSE: {_T.MODEL: 1.0, _T.EMBEDDING: 0.04, _T.ATTENTION: 0.32, _T.FFN: 0.64},
    ModelFamily.MOE: {_T.MODEL: 1.0, _T.EMBEDDING: 0.01, _T.ATTENTION: 0.03, _T.EXPERTS: 0.96},
    ModelFamily.DIFFUSION: {_T.TEXT_ENCODER: 0.12, _T.DENOISER: 0.81, _T.VAE_DECODER: 0.07, _T.CONTROLNET: 0.34,
                            _T.LORA: 0.01},
}
MAX_LAYER = 1023  # model.layers is at most 1024
MAX_EXPERTS = 1024
# An index range; the API server checks the schema's bounds, gensched's validator says what to write.
IndexRange = Annotated[str, Field(json_schema_extra={"pattern": r"^[0-9]{1,4}(-[0-9]{1,4})?$", "maxLength": 9})]


def _index_range(text: str, what: str, field: str, largest: int) -> range:
    """``'a-b'`` or ``'a'`` as a range, refusing numbers beyond ``largest`` before any range is built."""
    m = LAYER_RANGE.match(text)
    if m is None:
        raise ValueError(f"{field} {text!r} is not a range: write '0-7' or one {what} such as '12'")
    first = int(m.group(1)) if len(m.group(1)) <= 6 else largest + 1
    last = (int(m.group(2)) if len(m.group(2)) <= 6 else largest + 1) if m.group(2) is not None else first
    if max(first, last) > largest:
        raise ValueError(f"{field} {text[:40]!r} names {what} beyond {largest} (the largest model gensched "
                         f"accepts): write a range within 0-{largest}, e.g. '0-7'")
    if last < first:
        raise ValueError(f"{field} '{text}' runs backwards: write it as '{last}-{first}'")
    return range(first, last + 1)


class ModelOperatorSpec(KubeModel):
    """A model operator: one Ray Serve deployment, scaled on its own.

    By type (``Attention``, ``FFN``, ``Experts``, ``Embedding``, ``Model`` with a ``phase``; for diffusion
    pipelines ``TextEncoder``, ``Denoiser``, ``VAEDecoder`` and the adapters ``ControlNet``, ``LoRA``), or as a
    pipeline stage of consecutive ``layers`` (type ``Layers``, the default when ``layers`` is set).
    """

    name: str = Field(pattern=DNS_LABEL, max_length=40, description="Deployment name (DNS label).")
    type: OperatorType | None = Field(
        default=None,
        description="What the operator holds; default Layers (a pipeline stage) when layers is set.")
    layers: IndexRange | None = Field(
        default=None,
        description="Type Layers: layer range, inclusive: '0-7', or one layer: '12' (at most 1023).")
    phase: OperatorPhase | None = Field(
        default=None, description="Language models: serve only prompts (Prefill) or only tokens (Decode); "
                                  "default both.")
    experts: IndexRange | None = Field(
        default=None,
        description="Type Experts: which experts (of every layer) this operator holds, '0-3'; default all.")
    parameters_billions: float | None = Field(
        default=None, gt=0, le=10000,
        description="Weights this operator holds; default its type's usual share of model.parametersBillions.")
    gpus: float | None = Field(
        default=None, gt=0, le=8,
        description="GPU share per replica; default: resources.gpus split by layers or weights.")

    @property
    def kind(self) -> str:
        """The operator's type, ``Layers`` when only ``layers`` is given."""
        return str(self.type or OperatorType.LAYERS)

    @model_validator(mode="after")
    def _fields_match_type(self) -> ModelOperatorSpec:
        where = f"serve.operators[{self.name}]"
        if self.type is None and self.layers is None:
            raise ValueError(f"{where}: give a type (Attention, FFN, Experts, Embedding, Model, TextEncoder, "
                             "Denoiser, VAEDecoder, ...) or a layer range (layers: '0-7')")
        if self.layers is not None:
            if self.kind != OperatorType.LAYERS:
                raise ValueError(f"{where}.layers is only for type Layers (a pipeline stage); a {self.kind} "
                                 "operator spans every layer: remove layers")
            _index_range(self.layers, "layer", f"{where}.layers", MAX_LAYER)
        elif self.kind == OperatorType.LAYERS:
            raise ValueError(f"{where}: type Layers needs layers, e.g. layers: '0-7'")
        if self.phase is not None and self.kind == OperatorType.LAYERS:
            raise ValueError(f"{where}.phase: a pipeline stage serves both phases; for prefill/decode "
                             "disaggregation use type Model with phase Prefill and Decode")
        if self.experts is not None:
            if self.kind != OperatorType.EXPERTS:
                raise ValueError(f"{where}.experts is only for type Experts: remove it")
            _index_range(self.experts, "expert", f"{where}.experts", MAX_EXPERTS - 1)
        return self

    def layer_indices(self) -> range:
        """The layers of a pipeline stage (empty for typed operators, which span every layer)."""
        if self.layers is None:
            return range(0)
        return _index_range(self.layers, "layer", f"serve.operators[{self.name}].layers", MAX_LAYER)

    def expert_indices(self, experts: int) -> range:
        if self.experts is None:
            return range(experts)
        return _index_range(self.experts, "expert", f"serve.operators[{self.name}].experts", MAX_EXPERTS - 1)


class ProfileRef(KubeModel):
    """Where the measured profile of the model operators lives (the profiler's JSON in a ConfigMap)."""

    config_map: str = Field(pattern=DNS_SUBDOMAIN, max_length=253,
                            description="ConfigMap in the job's namespace holding the profile.")
    key: str = Field(default="profile.json", min_length=1, max_length=253, description="Key of the profile JSON.")
    context_tokens: int = Field(default=1024, ge=0, le=1_000_000,
                                description="Typical context (prompt + output so far) to size replicas for.")


class ServeSpec(KubeModel):
    """An online serving job: a Ray Serve app with one deployment per model operator.

    For diffusion pipelines, ``slo.ttftMs`` is the time to the finished image and ``slo.tbtMs`` the
    budget of one denoising step.
    """

    slo: SLOSpec
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Lower bound per model operator.")
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Upper bound per model operator.")
    family: ModelFamily | None = Field(
        default=None, description="DenseLM, MoE or Diffusion; default: what the operator types imply (DenseLM).")
    experts: int = Field(default=8, ge=1, le=MAX_EXPERTS, description="MoE: experts per layer.")
    operators: list[ModelOperatorSpec] = Field(
        default_factory=list, max_length=64,
        description="Model operators served as separate deployments (by type, or layer ranges as pipeline "
                    "stages); empty: one operator, the whole model.",
    )
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port of the serving ingress.")
    profile: ProfileRef | None = Field(
        default=None,
        description="Measured operator profile: each operator is then sized on its own latency curve "
                    "and its share of tbtMs; without it every operator uses the policy's targetOngoingRequests.",
    )

    def model_family(self) -> str:
        """The family named, or implied by the operator types (DenseLM without operators)."""
        if self.family is not None:
            return str(self.family)
        kinds = {op.kind for op in self.operators}
        if kinds & set(FAMILY_TYPES[ModelFamily.DIFFUSION]):
            return str(ModelFamily.DIFFUSION)
        return str(ModelFamily.MOE if OperatorType.EXPERTS in kinds else ModelFamily.DENSE)

    def is_pipeline(self) -> bool:
        """True when the operators are layer ranges (pipeline stages) that must cover model.layers."""
        return bool(self.operators) and all(op.kind == OperatorType.LAYERS for op in self.operators)

    @model_validator(mode="after")
    def _bounds(self) -> ServeSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) is above maxReplicas ({self.max_replicas}): "
                "raise maxReplicas or lower minReplicas"
            )
        names = [op.name for op in self.operators]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"operators: names must be unique, repeated: {', '.join(dup)}")
        if self.operators and not self.is_pipeline():
            self._check_typed()
        return self

    def _check_typed(self) -> None:
        """Typed operators: types the family has, every required stage present, phases and experts covered."""
        family = self.model_family()
        have = FAMILY_TYPES[family]
        for op in self.operators:
            if op.kind == OperatorType.LAYERS:
                raise ValueError(f"serve.operators[{op.name}]: layer ranges (pipeline stages) and typed operators "
                                 "cannot be mixed: give every operator a type, or every operator layers")
            if op.kind not in have:
                other = next(f for f, types in FAMILY_TYPES.items() if op.kind in types)
                near = {OperatorType.EXPERTS: "FFN", OperatorType.FFN: "Experts"}.get(op.kind)
                raise ValueError(
                    f"serve.operators[{op.name}].type: {op.kind} is not an operator of a {family} model (it has "
                    f"{', '.join(have)}): " + (f"use type {near}, or " if near and near in have else "")
                    + f"set serve.family to {other}")
            if op.phase is not None and family == ModelFamily.DIFFUSION:
                raise ValueError(f"serve.operators[{op.name}].phase: prefill/decode phases are for language models; "
                                 "a diffusion stage runs once per request: remove phase")
        kinds = {op.kind for op in self.operators}
        if family != ModelFamily.DIFFUSION and OperatorType.MODEL in kinds:
            if kinds != {OperatorType.MODEL}:
                raise ValueError("serve.operators: a Model operator holds the whole model and cannot be combined "
                                 f"with {', '.join(sorted(kinds - {OperatorType.MODEL}))} operators: use Model "
                                 "operators with phase Prefill and Decode, or split by type")
            required: tuple[str, ...] = (OperatorType.MODEL,)
        else:
            required = REQUIRED_TYPES[family]
        missing = [t for t in required if t not in kinds]
        if missing:
            raise ValueError(f"serve.operators: a {family} model split by type needs operators of type "
                             f"{', '.join(required)}; missing {', '.join(missing)}: add e.g. "
                             f"{{name: {missing[0].lower()}, type: {missing[0]}}}")
        phased = any(op.phase is not None for op in self.operators)
        for phase in (OperatorPhase.PREFILL, OperatorPhase.DECODE):
            note = f" ({phase})" if phased else ""
            for t in required:
                if not any(op.kind == t and op.phase in (None, phase) for op in self.operators):
                    raise ValueError(f"serve.operators: no {t} operator serves the {phase} phase: add one with "
                                     f"phase {phase} (or leave phase out to serve both)")
            if family == ModelFamily.MOE:
                seen: dict[int, str] = {}
                for op in self.operators:
                    if op.kind != OperatorType.EXPERTS or op.phase not in (None, phase):
                        continue
                    for e in op.expert_indices(self.experts):
                        if e >= self.experts:
                            raise ValueError(f"serve.operators[{op.name}].experts names expert {e} but serve.experts "
                                             f"is {self.experts} (experts 0-{self.experts - 1})")
                        if e in seen:
                            raise ValueError(f"serve.operators: expert {e} is in both '{seen[e]}' and '{op.name}' "
                                             f"{note}: each expert belongs to exactly one Experts operator")
                        seen[e] = op.name
                left = [e for e in range(self.experts) if e not in seen]
                if left:
                    raise ValueError(f"serve.operators: expert(s) {_ranges(left)} in no Experts operator"
                                     f"{note}: add them to one (experts: '0-{self.experts - 1}')")


class BudgetSpec(JobBudget):
    """Spending cap of one job: maxGpuHours, maxCost, maxGCO2 and warnAt (api/accounting.py)."""


class TolerationOperator(StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class Toleration(KubeModel):
    """Lets the job use nodes with a matching NoSchedule taint (as a Pod toleration does).

    The NVIDIA GPU taint ``nvidia.com/gpu:NoSchedule`` is always tolerated; other NoSchedule taints
    keep the job off a node unless a toleration here matches it.
    """

    key: str | None = Field(default=None, max_length=316,
                            description="Taint key to match; empty with operator Exists matches every taint.")
    operator: TolerationOperator = Field(default=TolerationOperator.EQUAL,
                                         description="Equal (key and value match) or Exists (key matches).")
    value: str | None = Field(default=None, max_length=63, description="Taint value (operator Equal).")
    effect: str | None = Field(default=None, pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)$",
                               description="Taint effect to match; empty matches every effect.")

    def matches(self, key: str, value: str | None, effect: str | None) -> bool:
        if self.effect and effect and self.effect != effect:
            return False
        if self.operator == TolerationOperator.EXISTS:
            return not self.key or self.key == key
        return self.key == key and (self.value or "") == (value or "")


class GenerativeJobSpec(KubeModel):
    """Desired state of a GenerativeJob."""

    x_kubernetes_validations: ClassVar[list[dict[str, str]]] = [
        {"rule": "self.mode != 'Batch' || has(self.batch)",
         "message": "spec.batch is required when spec.mode is Batch"},
        {"rule": "self.mode != 'Serve' || has(self.serve)",
         "message": "spec.serve is required when spec.mode is Serve"},
        {"rule": "!(has(self.batch) && has(self.serve))",
         "message": "set spec.batch or spec.serve, not both"},
    ]

    mode: JobMode = Field(description="Batch (run to completion) or Serve (online, autoscaled).")
    model: ModelSpec
    resources: ResourcesSpec
    batch: BatchSpec | None = None
    serve: ServeSpec | None = None
    policy_ref: str | None = Field(
        default=None, description="SchedulingPolicy name; default: the policy marked default."
    )
    budget: BudgetSpec | None = None
    priority: int | None = Field(
        default=None, ge=-2_147_483_648, le=1_000_000_000,
        description="Queue priority (higher first); overrides priorityClassName. Default: the PriorityClass, else 0.")
    priority_class_name: str | None = Field(
        default=None, pattern=DNS_SUBDOMAIN, max_length=253,
        description="A scheduling.k8s.io/v1 PriorityClass whose value is the job's priority.")
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32,
        description="Tolerations for NoSchedule node taints (nvidia.com/gpu is always tolerated).")

    @model_validator(mode="after")
    def _consistent(self) -> GenerativeJobSpec:
        if self.mode == JobMode.BATCH and self.batch is None:
            raise ValueError("mode is Batch but spec.batch is missing: add spec.batch (input, deadline ...)")
        if self.mode == JobMode.SERVE and self.serve is None:
            raise ValueError("mode is Serve but spec.serve is missing: add spec.serve (slo ...)")
        if self.batch is not None and self.serve is not None:
            raise ValueError("set spec.batch or spec.serve (matching spec.mode), not both")
        if self.serve is not None and self.serve.is_pipeline() and self.model.layers is not None:
            self._check_operator_cover(self.model.layers)
        if self.budget is not None and self.batch is not None and self.batch.estimated_duration:
            hours = parse_duration(self.batch.estimated_duration).total_seconds() / 3600
            need = hours * self.resources.gpus
            if self.budget.max_gpu_hours is not None and need > self.budget.max_gpu_hours:
                raise ValueError(
                    f"budget.maxGpuHours ({self.budget.max_gpu_hours}) is below what the job needs "
                    f"({need:.2f} GPU-hours = estimatedDuration x gpus): raise the budget or use fewer GPUs"
                )
        return self

    def _check_operator_cover(self, layers: int) -> None:
        assert self.serve is not None
        seen: dict[int, str] = {}
        for op in self.serve.operators:
            for i in op.layer_indices():
                if i >= layers:
                    raise ValueError(
                        f"serve.operators '{op.name}' names layer {i} but model.layers is {layers} "
                        f"(layers 0-{layers - 1})"
                    )
                if i in seen:
                    raise ValueError(
                        f"serve.operators: layer {i} is in both '{seen[i]}' and '{op.name}': "
                        "each layer belongs to exactly one operator"
                    )
                seen[i] = op.name
        missing = [i for i in range(layers) if i not in seen]
        if missing:
            raise ValueError(
                f"serve.operators skip layers {_ranges(missing)}: add them to an operator"
            )

    def gpu_memory_gib(self) -> float:
        """Requested GPU memory, or the amount derived from model size and precision."""
        if self.resources.gpu_memory_gib is not None:
            return self.resources.gpu_memory_gib
        total = model_memory_gib(self.model.parameters_billions, self.model.precision)
        # Whole-GPU jobs spread the model over their GPUs (tensor parallel).
        return round(total / max(1, self.resources.whole_gpus), 2)


def _ranges(values: list[int]) -> str:
    out: list[str] = []
    start = prev = values[0]
    for v in [*values[1:], math.inf]:  # type: ignore[list-item]
        if v != prev + 1:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = v  # type: ignore[assignment]
        prev = v  # type: ignore[assignment]
    return ", ".join(out)


class Placement(KubeModel):
    """Where the job's GPUs are."""

    node: str = Field(description="Node the job's GPUs are on.")
    gpu_indices: list[int] = Field(default_factory=list, description="GPU indices on the node.")
    gpu_milli: int = Field(ge=1, le=1000, description="Share of each listed GPU, in thousandths.")
    gpu_model: str | None = Field(default=None, description="GPU model of that node (nvidia.com/gpu.product).")
    gpu_memory_gib: float | None = Field(default=None, alias="gpuMemoryGiB",
                                         description="GPU memory per GPU the job takes.")


class TimeSlot(KubeModel):
    start: str = Field(description="Slot start (RFC 3339).")
    end: str = Field(description="Slot end (RFC 3339).")


class CarbonStatus(KubeModel):
    """Emissions expected when deferred and measured when finished (timing mode CarbonAware)."""

    signal: str | None = Field(default=None, description="Where the intensity came from and how fresh it is.")
    power_kw: float | None = Field(default=None, description="Modelled draw: GPUs x TDP x utilisation.")
    expected_gco2: float | None = Field(default=None, alias="expectedGCO2",
                                        description="Expected gCO2 of the planned run.")
    expected_saving_gco2: float | None = Field(default=None, alias="expectedSavingGCO2",
                                               description="Versus starting at the decision time.")
    expected_saving_pct: float | None = Field(default=None, description="Expected saving in percent of the baseline.")
    baseline_intensity: float | None = Field(
        default=None, description="Forecast gCO2/kWh over the run had it started at the decision time.")
    expected_intensity: float | None = Field(default=None, description="Forecast gCO2/kWh over the planned run.")
    energy_kwh: float | None = Field(default=None, alias="energyKWh", description="Measured run time x power.")
    actual_gco2: float | None = Field(default=None, alias="actualGCO2", description="Measured gCO2 of the run.")
    actual_saving_gco2: float | None = Field(default=None, alias="actualSavingGCO2",
                                             description="Versus the same run started at the decision time.")


class AutoscalingStatus(KubeModel):
    """The per-operator autoscaler's memory and last word (kept here so restarts keep it)."""

    last_evaluated: str | None = Field(default=None, description="When replicas were last re-decided.")
    last_decision: str | None = Field(default=None, description="The last change and why.")
    failures: int = Field(default=0, description="Consecutive passes without metrics (back-off).")
    next_attempt: str | None = Field(default=None, description="When metrics are tried again (back-off).")
    states: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per operator: last change time and recent targets (stabilization).")
    sizing: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per operator: requests in flight one replica is sized for, its latency budget, and the "
                    "source (profile or policy).")


class QueueStatus(KubeModel):
    """Where a waiting job stands in the scheduler's queue (written by each scheduling cycle)."""

    position: int | None = Field(default=None, description="1 = next to be placed, among all waiting jobs.")
    priority: int | None = Field(default=None, description="Effective priority (spec, PriorityClass or 0).")
    reason: str | None = Field(default=None, description="What it waits for: Unschedulable, QuotaExceeded, ...")
    waiting_for: str | None = Field(default=None, description="The limit that holds it, in words.")
    queued_at: str | None = Field(default=None, description="When it entered the queue (age order).")
    reserved_node: str | None = Field(default=None, description="Node held for it (head of the queue).")
    preemptions: int = Field(default=0, description="Times it was suspended to make room for other work.")


class GenerativeJobStatus(KubeModel):
    """Observed state of a GenerativeJob, written only by the operator."""

    phase: Phase | None = Field(default=None,
                                description="Pending, Deferred, Placed, Running, Succeeded, Failed or Invalid.")
    message: str | None = Field(default=None, description="What is going on, in words a human can act on.")
    conditions: list[Condition] = Field(default_factory=list,
                                        description="Kubernetes-style conditions (Valid, Placed, Ready, ...).")
    observed_generation: int | None = Field(default=None, description="The spec generation this status reflects.")
    policy: str | None = Field(default=None, description="SchedulingPolicy that applied.")
    placement: Placement | None = None
    gpu_memory_gib: float | None = Field(default=None, alias="gpuMemoryGiB", description="Effective GPU memory.")
    planned_start: str | None = Field(default=None, description="When the timing decision lets it start (RFC 3339).")
    planned_slots: list[TimeSlot] = Field(default_factory=list, description="When an interruptible job runs.")
    decided_at: str | None = Field(default=None, description="When the timing decision was first made.")
    released_at: str | None = Field(default=None, description="When the operator released the Job to run.")
    carbon: CarbonStatus | None = None
    started_at: str | None = Field(default=None, description="When its Job started running.")
    finished_at: str | None = Field(default=None, description="When its Job finished.")
    gpu_hours: float | None = Field(default=None, description="GPUs x hours it ran (final).")
    job_name: str | None = Field(default=None, description="The batch/v1 Job created for Batch mode.")
    ray_service_name: str | None = Field(default=None, description="The RayService created for Serve mode.")
    operator_replicas: dict[str, int] = Field(default_factory=dict, description="Replicas per model operator.")
    autoscaling: AutoscalingStatus | None = None
    queue: QueueStatus | None = None
    accounting: AccountingStatus | None = Field(
        default=None, description="GPU-hours, energy, gCO2, cost and outputs so far (final when the job ended).")


class GenerativeJob(KubeModel):
    """The whole object, for tests and tools (the controller mostly parses ``spec``)."""

    model_config = KubeModel.model_config | {"extra": "ignore"}

    api_version: str = "gensched.io/v1alpha1"
    kind: str = "GenerativeJob"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: GenerativeJobSpec
    status: GenerativeJobStatus | None = None
