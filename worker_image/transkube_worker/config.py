"""The worker's settings, all from environment variables the operator sets on the Job's pod."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from pydantic import ValidationError
from transkube_api.models import TranscodeJobSpec

from .errors import Internal, Unsupported
from .limits import InputLimits

DEFAULT_PROGRESS_INTERVAL = 2.0
DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")


def spec_from_env(env: Mapping[str, str]) -> TranscodeJobSpec:
    """TRANSKUBE_SPEC, the resolved spec as JSON. Raises Internal when missing (an operator bug), Unsupported for a
    spec this worker cannot read (e.g. a newer operator's field: retrying the same spec can never help)."""
    raw_spec = env.get("TRANSKUBE_SPEC")
    if not raw_spec:
        raise Internal("TRANSKUBE_SPEC is not set")
    try:
        return TranscodeJobSpec.model_validate_json(raw_spec)
    except ValidationError as exc:
        raise Unsupported(f"TRANSKUBE_SPEC is not a valid TranscodeJob spec for this worker: "
                          f"{exc.error_count()} error(s), first: {exc.errors()[0]['msg']}") from exc


def termination_log_from_env(env: Mapping[str, str]) -> Path:
    return Path(env.get("TRANSKUBE_TERMINATION_LOG") or DEFAULT_TERMINATION_LOG)


@dataclass(frozen=True)
class WorkerConfig:
    namespace: str
    name: str
    spec: TranscodeJobSpec
    accelerator: Literal["cpu", "nvidia"]
    progress_interval: float
    scratch_dir: Path
    termination_log: Path
    status_writes: bool
    limits: InputLimits = field(default_factory=InputLimits)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerConfig:
        """Raises Internal for a malformed environment (an operator bug), Unsupported for a spec this worker
        cannot read (e.g. a newer operator's field: retrying the same spec can never help)."""
        status_writes = env.get("TRANSKUBE_STATUS_WRITES", "true").strip().lower()
        if status_writes not in ("true", "false"):
            raise Internal(f"TRANSKUBE_STATUS_WRITES must be true or false, not {status_writes!r}")
        writes = status_writes == "true"
        namespace = env.get("TRANSKUBE_JOB_NAMESPACE", "")
        name = env.get("TRANSKUBE_JOB_NAME", "")
        if writes and not (namespace and name):
            raise Internal("TRANSKUBE_JOB_NAMESPACE and TRANSKUBE_JOB_NAME are required for status writes")
        spec = spec_from_env(env)
        accelerator = env.get("TRANSKUBE_ACCELERATOR", "cpu")
        if accelerator not in ("cpu", "nvidia"):
            raise Internal(f"TRANSKUBE_ACCELERATOR must be cpu or nvidia, not {accelerator!r}")
        raw_interval = env.get("TRANSKUBE_PROGRESS_INTERVAL", str(DEFAULT_PROGRESS_INTERVAL))
        try:
            interval = float(raw_interval)
        except ValueError:
            raise Internal(f"TRANSKUBE_PROGRESS_INTERVAL is not a number: {raw_interval!r}") from None
        if not math.isfinite(interval) or interval < 0:
            raise Internal(f"TRANSKUBE_PROGRESS_INTERVAL must be >= 0, not {raw_interval!r}")
        scratch = env.get("TRANSKUBE_SCRATCH_DIR") or env.get("TMPDIR") or "/tmp"  # noqa: S108 - the pod's emptyDir
        return cls(
            namespace=namespace,
            name=name,
            spec=spec,
            accelerator=cast(Literal["cpu", "nvidia"], accelerator),
            progress_interval=interval,
            scratch_dir=Path(scratch),
            termination_log=termination_log_from_env(env),
            status_writes=writes,
            limits=InputLimits.from_env(env),
        )
