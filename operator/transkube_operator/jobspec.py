"""Pure: the batch Job (and the worker's RBAC) for a TranscodeJob."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from transkube_api.constants import (
    API_VERSION,
    GROUP,
    KIND,
    KUEUE_QUEUE_LABEL,
    LABEL_ACCELERATOR,
    LABEL_JOB,
    LABEL_MANAGED_BY,
    LABEL_POOL,
    LABEL_PRIORITY,
    LABEL_ROLE,
    MANAGED_BY,
    PLURAL,
    ROLE_CLEANUP,
    WORKER_CONTAINER,
    ExitCode,
)
from transkube_api.models import TranscodeJobSpec

from .config import OperatorConfig

Accelerator = Literal["cpu", "nvidia"]
Manifest = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    """The TranscodeJob a Job belongs to."""

    name: str
    namespace: str
    uid: str


def job_name(owner_name: str, accelerator: Accelerator, requested: Accelerator, round_: int = 0) -> str:
    """Deterministic: the same TranscodeJob always maps to the same Job name, so a repeated create is a 409.

    A CPU fallback of a GPU job, and each manual retry round, get their own names, so they never collide with
    a Job still being deleted.
    """
    suffix = ("-cpu" if accelerator == "cpu" and requested == "nvidia" else "") + (f"-r{round_}" if round_ else "")
    base = f"{owner_name}{suffix}"
    if len(base) <= 52:  # Job names feed pod names (+ 11 chars) and the job-name label (63)
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    return f"{base[:43]}-{digest}"


def labels(owner: Owner, accelerator: Accelerator) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "transkube-worker",
        "app.kubernetes.io/component": "worker",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_JOB: owner.name,
        LABEL_ACCELERATOR: accelerator,
    }


def _resources(spec: TranscodeJobSpec, cfg: OperatorConfig, accelerator: Accelerator) -> Manifest:
    requests = dict(cfg.default_requests)
    limits = dict(cfg.default_limits)
    if spec.resources and spec.resources.requests:
        requests |= spec.resources.requests.model_dump(exclude_none=True)
    if spec.resources and spec.resources.limits:
        limits |= spec.resources.limits.model_dump(exclude_none=True)
    if accelerator == "nvidia":
        limits["nvidia.com/gpu"] = "1"
    return {"requests": requests, "limits": limits}


def build_job(owner: Owner, spec: TranscodeJobSpec, cfg: OperatorConfig, accelerator: Accelerator,
              *, pool: str | None = None, round_: int = 0, suspend: bool | None = None) -> Manifest:
    """`suspend`: create the Job held (queued, or waiting out a retry backoff); default spec.suspend."""
    name = job_name(owner.name, accelerator, spec.accelerator.type, round_)
    lbl = labels(owner, accelerator)
    # Scheduling labels on the Job (not the pods): what a queueing controller like Kueue keys on.
    job_labels = dict(lbl)
    if pool:
        job_labels[LABEL_POOL] = pool
        if cfg.scheduling.mode == "kueue":
            job_labels[KUEUE_QUEUE_LABEL] = cfg.scheduling.kueue_queue_name or pool
    secret = spec.input.credentials_secret_ref
    env = [
        {"name": "TRANSKUBE_JOB_NAMESPACE", "value": owner.namespace},
        {"name": "TRANSKUBE_JOB_NAME", "value": owner.name},
        {"name": "TRANSKUBE_SPEC", "value": spec.model_dump_json(by_alias=True, exclude_none=True)},
        {"name": "TRANSKUBE_ACCELERATOR", "value": accelerator},
        {"name": "TRANSKUBE_PROGRESS_INTERVAL", "value": str(cfg.progress_interval_seconds)},
        # /tmp is the pod's own emptyDir (the root filesystem is read-only).
        {"name": "TRANSKUBE_SCRATCH_DIR", "value": "/tmp"},  # noqa: S108
        {"name": "TMPDIR", "value": "/tmp"},  # noqa: S108
        {"name": "HOME", "value": "/tmp"},  # noqa: S108
        {"name": "AWS_REGION", "value": cfg.s3_region},
        *({"name": name, "value": str(value)} for name, value in sorted(cfg.limits.items())),
    ]
    if cfg.s3_endpoint:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": cfg.s3_endpoint})
    if cfg.fault_injection:
        env.append({"name": "TRANSKUBE_FAULT_INJECTION", "value": "allowed"})
    if accelerator == "nvidia":
        # The NVIDIA container runtime mounts the driver's video libraries only when asked.
        env.append({"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,video,utility"})
    # Credentials: the spec's Secret (must exist), else the default one if the namespace has it.
    # Secret keys are env names (AWS_ACCESS_KEY_ID, ...); listed after env so they can override it.
    env_from = [{"secretRef": {"name": secret.name}} if secret else
                {"secretRef": {"name": cfg.default_storage_secret, "optional": True}}]
    container: Manifest = {
        "name": WORKER_CONTAINER,
        "image": cfg.worker_image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(cfg.worker_command),
        "env": env,
        "envFrom": env_from,
        "resources": _resources(spec, cfg, accelerator),
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],  # noqa: S108
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    pod_spec: Manifest = {
        "restartPolicy": "Never",
        "serviceAccountName": cfg.worker_service_account,
        "terminationGracePeriodSeconds": cfg.termination_grace_seconds,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": cfg.scratch_size_limit}}],
    }
    if accelerator == "nvidia":
        pod_spec["nodeSelector"] = dict(cfg.gpu_node_selector)
        pod_spec["tolerations"] = [dict(t) for t in cfg.gpu_tolerations]
        if cfg.gpu_runtime_class:
            pod_spec["runtimeClassName"] = cfg.gpu_runtime_class
    job_spec: Manifest = {
        "backoffLimit": spec.retry_limit,
        "ttlSecondsAfterFinished": cfg.ttl_seconds_after_finished,
        "suspend": spec.suspend if suspend is None else suspend,
        "podFailurePolicy": {"rules": [
            # Bad input or an unsupported request fails the job at once: no retry can help.
            {"action": "FailJob", "onExitCodes": {"containerName": WORKER_CONTAINER, "operator": "In",
                                                  "values": list(ExitCode.PERMANENT)}},
            # Evictions, preemptions and node drains are not the job's fault.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            # Storage or network trouble, a killed (stalled) attempt, an unexpected ffmpeg failure: retry, and
            # count it against retryLimit. (The Job's default for any other failure, spelled out.)
            {"action": "Count", "onExitCodes": {"containerName": WORKER_CONTAINER, "operator": "In",
                                                "values": [ExitCode.TRANSIENT, ExitCode.INTERNAL]}},
        ]},
        "template": {"metadata": {"labels": lbl}, "spec": pod_spec},
    }
    if spec.deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": job_labels,
            # An annotation, not a label: "-5" is not a valid label value. Priority at creation time.
            "annotations": {LABEL_PRIORITY: str(spec.priority)},
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": KIND, "name": owner.name, "uid": owner.uid,
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": job_spec,
    }


def cleanup_job_name(owner_name: str) -> str:
    base = f"{owner_name}-cleanup"
    if len(base) <= 52:
        return base
    return f"{base[:43]}-{hashlib.sha256(base.encode()).hexdigest()[:8]}"


def build_cleanup_job(owner: Owner, spec: TranscodeJobSpec, cfg: OperatorConfig, since: str) -> Manifest:
    """A short Job in the worker's image and identity that removes what a killed attempt left behind: incomplete
    multipart uploads and objects written under the outputs since `since` (the job's creation)."""
    job = build_job(owner, spec, cfg, "cpu", suspend=False)
    job["metadata"]["name"] = cleanup_job_name(owner.name)
    job["metadata"]["labels"][LABEL_ROLE] = ROLE_CLEANUP
    job["metadata"].pop("annotations", None)
    template = job["spec"]["template"]
    template["metadata"]["labels"] = {**template["metadata"]["labels"], LABEL_ROLE: ROLE_CLEANUP}
    container = template["spec"]["containers"][0]
    # The configured worker command ends in its subcommand ("run"); the cleanup is its sibling.
    command = list(cfg.worker_command)
    container["command"] = [*command[:-1], "cleanup"] if command and command[-1] == "run" else [*command, "cleanup"]
    container["env"] = [e for e in container["env"] if e["name"] != "TRANSKUBE_FAULT_INJECTION"] + [
        {"name": "TRANSKUBE_CLEANUP_SINCE", "value": since}]
    container["resources"] = {"requests": {"cpu": "100m", "memory": "128Mi"},
                              "limits": {"cpu": "500m", "memory": "512Mi"}}
    job["spec"].update(backoffLimit=3, activeDeadlineSeconds=900)
    job["spec"].pop("podFailurePolicy", None)
    return job


def worker_rbac(namespace: str, cfg: OperatorConfig) -> list[Manifest]:
    """The worker may read its TranscodeJob and write its status (progress, probe facts, outputs); nothing else."""
    name = cfg.worker_service_account
    meta = {"name": name, "namespace": namespace, "labels": {LABEL_MANAGED_BY: MANAGED_BY}}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": [
            {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get"]},
            {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get", "patch"]},
        ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
    ]
