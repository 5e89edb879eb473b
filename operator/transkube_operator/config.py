"""Operator settings, read once from the environment (the Helm chart sets them)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from transkube_api.constants import LIMIT_DEFAULTS


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class OperatorConfig:
    worker_image: str = "ghcr.io/transkube/worker:latest"
    worker_command: tuple[str, ...] = ("transkube-worker", "run")
    worker_service_account: str = "transkube-worker"
    # Ensure the worker ServiceAccount/Role/RoleBinding in each namespace that runs jobs.
    manage_worker_rbac: bool = True
    # Secret (in the job's namespace) exported to the worker when a spec names none; optional.
    default_storage_secret: str = "transkube-storage"  # noqa: S105 (a Secret's name, not a secret)
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    ttl_seconds_after_finished: int = 3600
    termination_grace_seconds: int = 30
    progress_interval_seconds: float = 2.0
    default_requests: dict[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "1Gi"})
    default_limits: dict[str, str] = field(default_factory=lambda: {"cpu": "2", "memory": "4Gi"})
    scratch_size_limit: str = "20Gi"
    gpu_node_selector: dict[str, str] = field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    gpu_tolerations: tuple[dict[str, Any], ...] = (
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    )
    gpu_runtime_class: str | None = None
    metrics_port: int = 9090
    liveness_port: int = 8080
    # Input limits passed to every worker (TRANSKUBE_MAX_* env, same names in the operator and the worker).
    limits: dict[str, int] = field(default_factory=lambda: dict(LIMIT_DEFAULTS))

    @classmethod
    def from_env(cls) -> OperatorConfig:
        base = cls()
        return cls(
            worker_image=_env("TRANSKUBE_WORKER_IMAGE", base.worker_image),
            worker_command=tuple(json.loads(_env("TRANSKUBE_WORKER_COMMAND", json.dumps(base.worker_command)))),
            worker_service_account=_env("TRANSKUBE_WORKER_SERVICE_ACCOUNT", base.worker_service_account),
            manage_worker_rbac=_env("TRANSKUBE_MANAGE_WORKER_RBAC", "true").lower() == "true",
            default_storage_secret=_env("TRANSKUBE_DEFAULT_STORAGE_SECRET", base.default_storage_secret),
            s3_endpoint=os.environ.get("TRANSKUBE_S3_ENDPOINT") or None,
            s3_region=_env("TRANSKUBE_S3_REGION", base.s3_region),
            ttl_seconds_after_finished=int(_env("TRANSKUBE_JOB_TTL_SECONDS", str(base.ttl_seconds_after_finished))),
            termination_grace_seconds=int(_env("TRANSKUBE_TERMINATION_GRACE_SECONDS",
                                               str(base.termination_grace_seconds))),
            progress_interval_seconds=float(_env("TRANSKUBE_PROGRESS_INTERVAL_SECONDS",
                                                 str(base.progress_interval_seconds))),
            default_requests=json.loads(_env("TRANSKUBE_DEFAULT_REQUESTS", json.dumps(base.default_requests))),
            default_limits=json.loads(_env("TRANSKUBE_DEFAULT_LIMITS", json.dumps(base.default_limits))),
            scratch_size_limit=_env("TRANSKUBE_SCRATCH_SIZE_LIMIT", base.scratch_size_limit),
            gpu_node_selector=json.loads(_env("TRANSKUBE_GPU_NODE_SELECTOR", json.dumps(base.gpu_node_selector))),
            gpu_tolerations=tuple(json.loads(_env("TRANSKUBE_GPU_TOLERATIONS", json.dumps(base.gpu_tolerations)))),
            gpu_runtime_class=os.environ.get("TRANSKUBE_GPU_RUNTIME_CLASS") or None,
            metrics_port=int(_env("TRANSKUBE_METRICS_PORT", str(base.metrics_port))),
            liveness_port=int(_env("TRANSKUBE_LIVENESS_PORT", str(base.liveness_port))),
            limits={name: int(_env(name, str(default))) for name, default in LIMIT_DEFAULTS.items()},
        )
