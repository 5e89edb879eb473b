"""Operator settings, read once from the environment (the Helm chart sets them)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from transkube_api.constants import LIMIT_DEFAULTS
from transkube_api.scope import NAMESPACE_PLACEHOLDER, ScopeMap


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Pool:
    """A capacity pool: how many TranscodeJobs of it may run at once, and on what."""

    capacity: int
    accelerator: str = "cpu"  # cpu or nvidia: a job may only queue in a pool of its accelerator type


@dataclass(frozen=True)
class NamespaceQuota:
    """Per-namespace limits; None = unlimited. maxConcurrent makes jobs wait; the others refuse them."""

    max_concurrent: int | None = None  # admitted (running) at once; more wait in Queued
    max_queued: int | None = None  # Queued at once; a job beyond it is refused (QuotaExceeded)
    max_per_day: int | None = None  # created in the last 24 hours; a job beyond it is refused (QuotaExceeded)

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> NamespaceQuota:
        return cls(max_concurrent=raw.get("maxConcurrent"), max_queued=raw.get("maxQueued"),
                   max_per_day=raw.get("maxPerDay"))


@dataclass(frozen=True)
class Scheduling:
    """Admission: pools, aging, quotas. builtin: the operator admits; kueue: Kueue unsuspends the Jobs."""

    mode: str = "builtin"
    pools: dict[str, Pool] = field(default_factory=lambda: {"cpu": Pool(4, "cpu"), "gpu": Pool(1, "nvidia")})
    # The pool a job goes to when spec.pool is unset, by accelerator type.
    default_pools: dict[str, str] = field(default_factory=lambda: {"cpu": "cpu", "nvidia": "gpu"})
    # A waiting job gains one priority step per aging_seconds (0: no aging), so low priorities never starve.
    aging_seconds: int = 300
    default_quota: NamespaceQuota = field(default_factory=NamespaceQuota)
    quotas: dict[str, NamespaceQuota] = field(default_factory=dict)
    kueue_queue_name: str | None = None  # kueue mode: the LocalQueue; default: the pool's name
    max_positions: int = 200  # status.queue.position is kept for this many places per pool

    def quota(self, namespace: str) -> NamespaceQuota:
        return self.quotas.get(namespace, self.default_quota)

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> Scheduling:
        base = cls()
        pools = {name: Pool(int(p["capacity"]), str(p.get("accelerator", "cpu")))
                 for name, p in (raw.get("pools") or {}).items()} or base.pools
        return cls(mode=str(raw.get("mode", base.mode)), pools=pools,
                   default_pools={**base.default_pools, **(raw.get("defaultPools") or {})},
                   aging_seconds=int(raw.get("agingSeconds", base.aging_seconds)),
                   default_quota=NamespaceQuota.from_wire(raw.get("defaultQuota") or {}),
                   quotas={ns: NamespaceQuota.from_wire(q) for ns, q in (raw.get("quotas") or {}).items()},
                   kueue_queue_name=raw.get("kueueQueueName") or None,
                   max_positions=int(raw.get("maxPositions", base.max_positions)))


@dataclass(frozen=True)
class Webhooks:
    retry_schedule: tuple[int, ...] = (0, 5, 300, 1800, 7200, 18000, 36000)
    # Networks a webhook URL may resolve to although they are loopback/private (metadata needs an exact /32).
    allowed_cidrs: tuple[str, ...] = ()
    allow_http: bool = False
    timeout_seconds: float = 10.0
    max_response_bytes: int = 65536

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> Webhooks:
        base = cls()
        return cls(retry_schedule=tuple(int(x) for x in raw.get("retrySchedule", base.retry_schedule)),
                   allowed_cidrs=tuple(raw.get("allowedCidrs", base.allowed_cidrs)),
                   allow_http=bool(raw.get("allowHttp", base.allow_http)),
                   timeout_seconds=float(raw.get("timeoutSeconds", base.timeout_seconds)),
                   max_response_bytes=int(raw.get("maxResponseBytes", base.max_response_bytes)))


@dataclass(frozen=True)
class LeaderElection:
    """Leader election between operator replicas (leader.py): only the holder of the Lease reconciles.

    renew_deadline < lease_duration: a leader that cannot renew stops before a standby may take over; a standby
    takes over lease_duration to lease_duration + 2 retry periods after the leader's last renewal."""

    enabled: bool = True
    lease_name: str = "transkube-operator"
    lease_namespace: str = "default"  # the chart sets the release namespace
    lease_duration_seconds: int = 8
    renew_deadline_seconds: float = 6.0
    retry_period_seconds: float = 2.0

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> LeaderElection:
        base = cls()
        return cls(enabled=bool(raw.get("enabled", base.enabled)),
                   lease_name=str(raw.get("leaseName") or base.lease_name),
                   lease_namespace=str(raw.get("leaseNamespace") or base.lease_namespace),
                   lease_duration_seconds=int(raw.get("leaseDurationSeconds", base.lease_duration_seconds)),
                   renew_deadline_seconds=float(raw.get("renewDeadlineSeconds", base.renew_deadline_seconds)),
                   retry_period_seconds=float(raw.get("retryPeriodSeconds", base.retry_period_seconds)))

    def check(self) -> None:
        if not 0 < self.retry_period_seconds < self.renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError("leader election needs 0 < retryPeriodSeconds < renewDeadlineSeconds "
                             "< leaseDurationSeconds")


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
    scheduling: Scheduling = field(default_factory=Scheduling)
    # Delay before retry n (the last entry repeats); spec.retryBackoffSeconds overrides it per job.
    retry_backoff_seconds: tuple[int, ...] = (10, 30, 60, 120, 300)
    # Watchdog: an attempt whose ffmpeg progress is older than this is killed (counted) and retried.
    stall_timeout_seconds: int = 300
    # Delete finished TranscodeJobs this long after completion (0: keep them); spec.ttlSecondsAfterFinished wins.
    finished_retention_seconds: int = 0
    webhooks: Webhooks = field(default_factory=Webhooks)
    # Which S3 prefixes each namespace's jobs may name (chart: storageScope); unconfined by default.
    storage_scope: ScopeMap = field(default_factory=lambda: ScopeMap(NAMESPACE_PLACEHOLDER))
    leader_election: LeaderElection = field(default_factory=LeaderElection)
    # The pod's name (downward API): the first part of this replica's leader-election identity.
    pod_name: str | None = None
    # Test-only: let the worker read the transkube.dev/fault-injection annotation. Never on in production.
    fault_injection: bool = False

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
            scheduling=Scheduling.from_wire(json.loads(_env("TRANSKUBE_SCHEDULING", "{}"))),
            retry_backoff_seconds=tuple(json.loads(_env("TRANSKUBE_RETRY_BACKOFF_SECONDS",
                                                        json.dumps(base.retry_backoff_seconds)))),
            stall_timeout_seconds=int(_env("TRANSKUBE_STALL_TIMEOUT_SECONDS", str(base.stall_timeout_seconds))),
            finished_retention_seconds=int(_env("TRANSKUBE_FINISHED_RETENTION_SECONDS",
                                                str(base.finished_retention_seconds))),
            webhooks=Webhooks.from_wire(json.loads(_env("TRANSKUBE_WEBHOOKS", "{}"))),
            storage_scope=ScopeMap.from_wire(json.loads(_env("TRANSKUBE_STORAGE_SCOPE", "{}")),
                                             NAMESPACE_PLACEHOLDER, "namespaces"),
            fault_injection=_env("TRANSKUBE_FAULT_INJECTION", "false").lower() == "true",
            leader_election=LeaderElection.from_wire(json.loads(_env("TRANSKUBE_LEADER_ELECTION", "{}"))),
            pod_name=os.environ.get("TRANSKUBE_POD_NAME") or None,
        )
