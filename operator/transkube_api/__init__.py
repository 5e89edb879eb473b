"""The TranscodeJob API: pydantic models that are the single source of truth for the CRD schema,
the operator, the worker and the REST shim."""

from .constants import GROUP, KIND, PLURAL, SHORT_NAME, SINGULAR, VERSION
from .models import (
    AcceleratorSpec,
    AudioSpec,
    Condition,
    InputFacts,
    InputSpec,
    OutputResult,
    OutputSpec,
    Progress,
    QualityMetrics,
    QualitySpec,
    TranscodeJobSpec,
    TranscodeJobStatus,
    TranscodePresetSpec,
    VideoSpec,
)

__all__ = [
    "GROUP", "KIND", "PLURAL", "SHORT_NAME", "SINGULAR", "VERSION",
    "AcceleratorSpec", "AudioSpec", "Condition", "InputFacts", "InputSpec", "OutputResult", "OutputSpec",
    "Progress", "QualityMetrics", "QualitySpec", "TranscodeJobSpec", "TranscodeJobStatus", "TranscodePresetSpec",
    "VideoSpec",
]
