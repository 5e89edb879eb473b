"""Proof that the local cluster is real: the Job controller, garbage collector, admission, scheduler,
node agent and S3 server all do their actual jobs."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transkube_dev import procs
from transkube_dev.cluster import ClusterState
from transkube_dev.kube import ApiError, Kube, Obj
from transkube_dev.nodeagent_config import CPU_NODE, GPU_NODE

from .conftest import job_condition, wait_for


def job(name: str, script: str, backoff_limit: int = 0, **extra: Any) -> Obj:
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, **extra.pop("metadata", {})},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "main", "image": "debian:bookworm-slim", "command": ["sh", "-c", script],
                                **extra.pop("container", {})}],
                **extra.pop("pod", {}),
            }},
            **extra,
        },
    }


def pods_of(kube: Kube, namespace: str, job_name: str) -> list[Obj]:
    items = kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"job-name={job_name}")["items"]
    return list(items)


def test_job_completes_through_the_job_controller(kube: Kube, namespace: str, kubectl: Callable[..., Any]) -> None:
    kube.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", job("hello", "echo hello from $HOSTNAME on $(hostname)"))
    done = wait_for("Job Complete", lambda: job_condition(
        kube.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/hello"), "Complete"))
    assert done["reason"] == "CompletionsReached"
    (pod,) = pods_of(kube, namespace, "hello")
    assert pod["status"]["phase"] == "Succeeded"
    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 0 and state["reason"] == "Completed"
    # kubectl logs goes API server -> node agent's kubelet endpoint.
    logs = kubectl("logs", "-n", namespace, pod["metadata"]["name"]).stdout
    assert logs.strip() == f"hello from {pod['metadata']['name']} on {pod['metadata']['name']}"


def test_failing_job_is_retried_then_fails_after_backoff_limit(kube: Kube, namespace: str) -> None:
    kube.create(f"/apis/batch/v1/namespaces/{namespace}/jobs",
                job("fails", "echo bad input >/dev/termination-log; exit 3", backoff_limit=1))
    failed = wait_for("Job Failed", lambda: job_condition(
        kube.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/fails"), "Failed"), timeout=120)
    assert failed["reason"] == "BackoffLimitExceeded"
    status = kube.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/fails")["status"]
    assert status["failed"] == 2  # the first try and one retry
    pods = pods_of(kube, namespace, "fails")
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Failed"
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == 3
        assert terminated["message"] == "bad input\n"


def test_deleting_the_owner_garbage_collects_its_job(kube: Kube, namespace: str) -> None:
    owner = kube.create(f"/api/v1/namespaces/{namespace}/configmaps",
                        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"],
           "controller": True, "blockOwnerDeletion": True}
    kube.create(f"/apis/batch/v1/namespaces/{namespace}/jobs",
                job("owned", "sleep 600", metadata={"ownerReferences": [ref]}))
    wait_for("owned Job's pod running",
             lambda: any(p["status"].get("phase") == "Running" for p in pods_of(kube, namespace, "owned")))
    kube.delete(f"/api/v1/namespaces/{namespace}/configmaps/owner",
                {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"})

    def job_gone() -> bool:
        try:
            kube.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/owned")
        except ApiError as e:
            return e.status == 404
        return False

    wait_for("garbage collection of the owned Job", job_gone, timeout=90)
    wait_for("its pods gone too", lambda: not pods_of(kube, namespace, "owned"), timeout=90)


def test_pod_security_admission_rejects_privileged_pod(kube: Kube, namespace: str) -> None:
    kube.merge_patch(f"/api/v1/namespaces/{namespace}",
                     {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged"}, "spec": {"containers": [
        {"name": "c", "image": "x", "command": ["true"], "securityContext": {"privileged": True}}]}}
    with pytest.raises(ApiError) as err:
        kube.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    assert err.value.status == 403
    message = json.loads(err.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message
    assert 'privileged (container "c" must not set securityContext.privileged=true)' in message


def _pod(name: str, *, gpu: bool, tolerate: bool) -> Obj:
    container: Obj = {"name": "c", "image": "x", "command": ["sleep", "600"]}
    if gpu:
        container["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    spec: Obj = {"containers": [container], "terminationGracePeriodSeconds": 1}
    if tolerate:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_scheduler_keeps_gpu_node_for_tolerating_gpu_pods(kube: Kube, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}/pods"
    kube.create(base, _pod("gpu", gpu=True, tolerate=True))
    for i in range(4):
        kube.create(base, _pod(f"cpu-{i}", gpu=False, tolerate=False))
    kube.create(base, _pod("gpu-no-toleration", gpu=True, tolerate=False))

    gpu_pod = wait_for("GPU pod scheduled", lambda: kube.get(f"{base}/gpu")["spec"].get("nodeName"))
    assert gpu_pod == GPU_NODE.name
    for i in range(4):
        node = wait_for("CPU pod scheduled", lambda i=i: kube.get(f"{base}/cpu-{i}")["spec"].get("nodeName"))
        assert node == CPU_NODE.name

    def unschedulable() -> Obj | None:
        conds = kube.get(f"{base}/gpu-no-toleration")["status"].get("conditions", [])
        return next((c for c in conds if c["type"] == "PodScheduled" and c["reason"] == "Unschedulable"), None)

    cond = wait_for("intolerant GPU pod reported Unschedulable", unschedulable)
    assert "untolerated taint" in cond["message"] and "nvidia.com/gpu" in cond["message"]
    assert not kube.get(f"{base}/gpu-no-toleration")["spec"].get("nodeName")
    wait_for("GPU pod running on the GPU node", lambda: kube.get(f"{base}/gpu")["status"].get("phase") == "Running")


IN_CLUSTER_PROBE = r"""
import json, os, pathlib
from kubernetes import client, config
config.load_incluster_config()
review = client.AuthenticationV1Api().create_self_subject_review(
    {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
sa = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")
pathlib.Path("/tmp/scratch-test").write_text("x")
out = {
    "user": review.status.user_info.username,
    "namespace": (sa / "namespace").read_text(),
    "env": {k: os.environ.get(k) for k in ("FROM_SECRET", "FROM_CONFIGMAP", "POD_NAME", "POD_NAMESPACE",
                                          "NODE_NAME", "CPU_LIMIT", "EXPANDED", "PREFIXED_color")},
}
pathlib.Path("/dev/termination-log").write_text(json.dumps(out))
"""


def test_pod_gets_env_volumes_and_a_working_in_cluster_client(kube: Kube, namespace: str) -> None:
    ns = f"/api/v1/namespaces/{namespace}"
    kube.create(f"{ns}/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                                  "stringData": {"token": "s3cr3t"}})
    kube.create(f"{ns}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                                     "data": {"mode": "fast", "color": "blue"}})
    container = {
        "command": ["python", "-c", IN_CLUSTER_PROBE],
        "resources": {"limits": {"cpu": "1500m"}},
        "env": [
            {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "FROM_CONFIGMAP", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "EXPANDED", "value": "$(POD_NAMESPACE)/$(FROM_CONFIGMAP)"},
        ],
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "PREFIXED_"}],
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
    }
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
           "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x", **container}],
                    "volumes": [{"name": "scratch", "emptyDir": {}}]}}
    kube.create(f"{ns}/pods", pod)
    done = wait_for("probe pod finished",
                    lambda: kube.get(f"{ns}/pods/probe")["status"].get("phase") in ("Succeeded", "Failed"))
    assert done
    status = kube.get(f"{ns}/pods/probe")["status"]
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert status["phase"] == "Succeeded", terminated
    out = json.loads(terminated["message"])
    assert out["user"] == f"system:serviceaccount:{namespace}:default"
    assert out["namespace"] == namespace
    assert out["env"] == {
        "FROM_SECRET": "s3cr3t", "FROM_CONFIGMAP": "fast", "POD_NAME": "probe", "POD_NAMESPACE": namespace,
        "NODE_NAME": CPU_NODE.name, "CPU_LIMIT": "2", "EXPANDED": f"{namespace}/fast", "PREFIXED_color": "blue",
    }
    assert not Path("/tmp/scratch-test").exists(), "emptyDir at /tmp must be private to the pod"


def test_missing_secret_leaves_container_waiting_with_config_error(kube: Kube, namespace: str) -> None:
    ns = f"/api/v1/namespaces/{namespace}"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "needs-secret"},
           "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "command": ["true"], "env": [
               {"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]}]}}
    kube.create(f"{ns}/pods", pod)

    def waiting() -> Obj | None:
        statuses = kube.get(f"{ns}/pods/needs-secret")["status"].get("containerStatuses") or []
        return statuses[0]["state"].get("waiting") if statuses else None

    # The agent may first report ContainerCreating, or a config error about the namespace's kube-root-ca.crt
    # ConfigMap (its publisher is still creating it in this fresh namespace); then it names the Secret.
    state = wait_for("CreateContainerConfigError naming the Secret",
                     lambda: (w := waiting()) and w.get("reason") == "CreateContainerConfigError"
                     and "absent" in w.get("message", "") and w)
    assert state["reason"] == "CreateContainerConfigError"
    # Creating the secret lets the pod start, as with a real kubelet.
    kube.create(f"{ns}/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "absent"},
                                  "stringData": {"k": "v"}})
    wait_for("pod succeeds once the secret exists",
             lambda: kube.get(f"{ns}/pods/needs-secret")["status"].get("phase") == "Succeeded", timeout=30)


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return [p for p in found if procs.alive(p)]


def test_suspending_a_job_kills_its_process_group(kube: Kube, namespace: str) -> None:
    marker = f"sleep {600 + uuid.uuid4().int % 1000}"
    # A child process in the group too: the whole group must go.
    kube.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", job("sleeper", f"{marker} & {marker}; wait"))
    wait_for("processes running", lambda: len(_processes_with(marker)) >= 2)
    kube.merge_patch(f"/apis/batch/v1/namespaces/{namespace}/jobs/sleeper", {"spec": {"suspend": True}})
    wait_for("processes killed", lambda: not _processes_with(marker), timeout=30)
    wait_for("pods deleted", lambda: not pods_of(kube, namespace, "sleeper"), timeout=30)
    suspended = wait_for("Job Suspended", lambda: job_condition(
        kube.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/sleeper"), "Suspended"))
    assert suspended["reason"] == "JobSuspended"


def test_nodes_are_ready_with_fresh_leases_and_gpu_capacity(kube: Kube, cluster: ClusterState) -> None:
    for name in cluster.nodes:
        lease = kube.get(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}")
        renewed = dt.datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))
        assert (dt.datetime.now(dt.UTC) - renewed).total_seconds() < 30
    gpu = kube.get(f"/api/v1/nodes/{GPU_NODE.name}")
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    assert gpu["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in gpu["spec"]["taints"]
    cpu = kube.get(f"/api/v1/nodes/{CPU_NODE.name}")
    assert "nvidia.com/gpu" not in cpu["status"]["allocatable"]


def test_s3_round_trip_with_boto3(s3: Any, cluster: ClusterState) -> None:
    assert cluster.s3 is not None
    key = f"smoke/{uuid.uuid4().hex}.bin"
    body = bytes(range(256)) * 4096
    s3.put_object(Bucket=cluster.s3.bucket, Key=key, Body=body)
    got = s3.get_object(Bucket=cluster.s3.bucket, Key=key)
    assert got["Body"].read() == body
    assert got["ContentLength"] == len(body)
