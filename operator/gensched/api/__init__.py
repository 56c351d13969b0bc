"""API types: the pydantic models behind the GenerativeJob and SchedulingPolicy CRDs.

These models are the single source of truth: ``gensched crds`` renders the CRD
YAML from them, and the controller parses every object through them.
"""

from gensched.api.errors import SpecError, format_validation_error
from gensched.api.generativejob import (
    BatchSpec,
    GenerativeJob,
    GenerativeJobSpec,
    GenerativeJobStatus,
    JobMode,
    ModelOperatorSpec,
    ModelSpec,
    Phase,
    Placement,
    Precision,
    ResourcesSpec,
    ServeSpec,
    SLOSpec,
)
from gensched.api.policy import (
    AutoscalingSpec,
    PackingSpec,
    PackingStrategy,
    SchedulingPolicy,
    SchedulingPolicySpec,
    TimingMode,
    TimingSpec,
)

__all__ = [
    "AutoscalingSpec",
    "BatchSpec",
    "GenerativeJob",
    "GenerativeJobSpec",
    "GenerativeJobStatus",
    "JobMode",
    "ModelOperatorSpec",
    "ModelSpec",
    "PackingSpec",
    "PackingStrategy",
    "Phase",
    "Placement",
    "Precision",
    "ResourcesSpec",
    "SLOSpec",
    "SchedulingPolicy",
    "SchedulingPolicySpec",
    "ServeSpec",
    "SpecError",
    "TimingMode",
    "TimingSpec",
    "format_validation_error",
]
