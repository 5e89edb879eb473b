"""TranscodeJob end to end on the local cluster: the operator (installed by Helm, running as a pod), the
worker (a real Job's pod running ffmpeg), MinIO, and the CR status telling the story."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transkube_dev.cluster import ClusterState
from transkube_dev.kube import ApiError, Kube, Obj
from transkube_dev.nodeagent_config import CPU_NODE, GPU_NODE

from .conftest import OPERATOR_NS, InstalledOperator, job_condition, phase_of, tj_path, wait_for

BUCKET = "transkube"


def ffprobe(path: Path) -> Obj:
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                          str(path)], check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout))


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")

    def make(name: str, seconds: int, size: str) -> Path:
        path = d / name
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
                        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                        "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
                        "-shortest", str(path)], check=True)
        return path

    corrupt = d / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(200_000))
    return {"short": make("short.mp4", 4, "640x360"), "long": make("long.mp4", 20, "1280x720"), "corrupt": corrupt}


def upload(s3: Any, path: Path) -> str:
    key = f"inputs/{uuid.uuid4().hex}/{path.name}"
    s3.upload_file(str(path), BUCKET, key)
    return f"s3://{BUCKET}/{key}"


def tj(name: str, input_uri: str, outputs: list[Obj] | None = None, **spec: Any) -> Obj:
    prefix = f"outputs/{uuid.uuid4().hex}"
    return {
        "apiVersion": "media.transkube.dev/v1alpha1", "kind": "TranscodeJob", "metadata": {"name": name},
        "spec": {"input": {"uri": input_uri},
                 "outputs": outputs or [{"name": "web", "uri": f"s3://{BUCKET}/{prefix}/web.mp4", "container": "mp4",
                                         "video": {"codec": "h264", "resolution": "480p", "crf": 28},
                                         "audio": {"codec": "aac", "bitrate": "96k"}}],
                 **spec},
    }


def slow_output(prefix: str) -> list[Obj]:
    """An output slow enough (a few seconds per attempt here) to act on the job while it runs."""
    return [{"name": "slow", "uri": f"s3://{BUCKET}/{prefix}/slow.mp4", "container": "mp4",
             "video": {"codec": "h264", "preset": "slower", "crf": 23}, "audio": {"codec": "aac"}}]


def get_tj(kube: Kube, ns: str, name: str) -> Obj:
    return kube.get(tj_path(ns, name))


def wait_phase(kube: Kube, ns: str, name: str, phases: tuple[str, ...], timeout: float = 180) -> Obj:
    wait_for(f"{name} in {phases}", lambda: phase_of(kube, ns, name) in phases, timeout=timeout)
    return get_tj(kube, ns, name)


def condition(obj: Obj, kind: str) -> Obj | None:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), None)


def jobs_of(kube: Kube, ns: str, name: str) -> list[Obj]:
    return list(kube.get(f"/apis/batch/v1/namespaces/{ns}/jobs",
                         labelSelector=f"transkube.dev/transcodejob={name}")["items"])


def pods_of(kube: Kube, ns: str, name: str) -> list[Obj]:
    return list(kube.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=f"transkube.dev/transcodejob={name}")["items"])


def events_of(kube: Kube, ns: str, name: str) -> list[str]:
    items = kube.get(f"/api/v1/namespaces/{ns}/events", fieldSelector=f"involvedObject.name={name}")["items"]
    return [e["reason"] for e in items]


def worker_pid(cluster: ClusterState, pod: Obj) -> int:
    meta = pod["metadata"]
    pid_file = Path(cluster.dir) / "agent" / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}" / \
        "containers" / "worker" / "pid"
    return int(pid_file.read_text())


def s3_exists(s3: Any, uri: str) -> bool:
    key = uri.split("/", 3)[3]
    try:
        s3.head_object(Bucket=BUCKET, Key=key)
    except s3.exceptions.ClientError:
        return False
    return True


def test_job_succeeds_with_progress_probe_facts_and_verified_output(
        kube: Kube, tj_namespace: str, s3: Any, media: dict[str, Path], tmp_path: Path,
        kubectl: Callable[..., Any]) -> None:
    ns = tj_namespace
    body = tj("web", upload(s3, media["long"]))
    kube.create(tj_path(ns), body)
    seen: list[float] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = get_tj(kube, ns, "web").get("status") or {}
        percent = (status.get("progress") or {}).get("percent")
        if percent is not None and (not seen or seen[-1] != percent):
            seen.append(percent)
        if status.get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(0.1)
    obj = get_tj(kube, ns, "web")
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    intermediate = {p for p in seen if 0 < p < 100}
    assert len(intermediate) >= 3, f"progress values seen: {seen}"
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    assert status["progress"]["stage"] == "Done" and status["progress"]["percent"] == 100

    # Probed input facts.
    assert status["input"]["width"] == 1280 and status["input"]["height"] == 720
    assert abs(status["input"]["durationSeconds"] - 20) < 0.2

    # The output really is what was asked for.
    (out,) = status["outputs"]
    local = tmp_path / "web.mp4"
    s3.download_file(BUCKET, out["uri"].split("/", 3)[3], str(local))
    probe = ffprobe(local)
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    audio = next(s for s in probe["streams"] if s["codec_type"] == "audio")
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 854, 480)
    assert audio["codec_name"] == "aac"
    assert abs(float(probe["format"]["duration"]) - 20) < 0.2
    assert out["checksum"] == "sha256:" + hashlib.sha256(local.read_bytes()).hexdigest()
    assert out["sizeBytes"] == local.stat().st_size

    # Conditions per kstatus, stamped with the generation they describe.
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    assert condition(obj, "Succeeded")["status"] == "True"  # type: ignore[index]
    assert condition(obj, "Reconciling") is None and condition(obj, "Stalled") is None
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert all(c["observedGeneration"] == obj["metadata"]["generation"] for c in status["conditions"])
    assert status["attempts"] == 1 and status["completionTime"] and status["startTime"]
    # No handler results or kopf state in status; kopf keeps what it needs in our annotations.
    assert set(status) <= {"observedGeneration", "phase", "conditions", "progress", "input", "outputs", "attempts",
                           "jobName", "accelerator", "startTime", "completionTime", "queue", "attemptHistory"}
    assert status["queue"]["pool"] == "cpu" and status["queue"]["admittedTime"]
    (attempt,) = status["attemptHistory"]
    assert attempt["exitCode"] == 0 and attempt["reason"] == "Succeeded" and attempt["node"]
    reasons = wait_for("events", lambda: (r := events_of(kube, ns, "web")) and "Succeeded" in r and r)
    assert {"JobCreated", "Started", "Succeeded"} <= set(reasons)
    table = kubectl("get", "tj", "-n", ns).stdout
    assert table.split("\n")[0].split() == ["NAME", "PHASE", "PROGRESS", "ETA", "AGE"]
    assert "Succeeded" in table


def test_kubectl_wait_for_condition_succeeded(tj_namespace: str, s3: Any, media: dict[str, Path],
                                              kubectl: Callable[..., Any]) -> None:
    manifest = json.dumps(tj("waited", upload(s3, media["short"])))
    kubectl("apply", "-n", tj_namespace, "-f", "-", input=manifest)
    result = kubectl("wait", "-n", tj_namespace, "--for=condition=Succeeded", "tj/waited", "--timeout=180s",
                     check=False)
    assert result.returncode == 0, result.stderr
    assert "condition met" in result.stdout


@pytest.mark.parametrize(("output", "field", "message"), [
    ({"video": {"codec": "h264", "crf": 20, "bitrate": "2M"}, "container": "mp4"},
     "spec.outputs[0].video.crf", "crf and bitrate are mutually exclusive"),
    ({"video": {"codec": "h264"}, "container": "webm"},
     "spec.outputs[0].video.codec", "webm cannot carry that video codec"),
    ({"video": {"codec": "h265", "width": 641}, "container": "mp4"},
     "spec.outputs[0].video.width", "multiple of 2"),
    ({"container": "avi"}, "spec.outputs[0].container", "Unsupported value"),
])
def test_invalid_spec_is_rejected_at_apply_with_the_field_named(
        tj_namespace: str, kubectl: Callable[..., Any], output: Obj, field: str, message: str) -> None:
    body = tj("bad", "s3://transkube/in.mp4", [{"name": "o", "uri": "s3://transkube/o.bin", **output}])
    result = kubectl("apply", "-n", tj_namespace, "-f", "-", input=json.dumps(body), check=False)
    assert result.returncode != 0
    assert field in result.stderr and message in result.stderr, result.stderr


def test_spec_is_immutable_except_suspend_and_cancel(kube: Kube, tj_namespace: str, s3: Any,
                                                     media: dict[str, Path]) -> None:
    ns = tj_namespace
    kube.create(tj_path(ns), tj("frozen", upload(s3, media["short"]), suspend=True))
    with pytest.raises(ApiError) as err:
        kube.merge_patch(tj_path(ns, "frozen"), {"spec": {"retryLimit": 5}})
    assert err.value.status == 422
    assert "spec is immutable after creation, except suspend, cancel, priority" in err.value.body
    kube.merge_patch(tj_path(ns, "frozen"), {"spec": {"cancel": True}})
    with pytest.raises(ApiError) as err:
        kube.merge_patch(tj_path(ns, "frozen"), {"spec": {"cancel": False}})
    assert "cancel cannot be undone" in err.value.body


def test_missing_input_fails_fast_with_input_not_found(kube: Kube, tj_namespace: str) -> None:
    ns = tj_namespace
    kube.create(tj_path(ns), tj("missing", f"s3://{BUCKET}/does/not/exist.mp4", retryLimit=3))
    obj = wait_phase(kube, ns, "missing", ("Failed", "Succeeded"))
    assert obj["status"]["phase"] == "Failed"
    assert obj["status"]["reason"] == "InputNotFound"
    assert condition(obj, "Stalled")["reason"] == "InputNotFound"  # type: ignore[index]
    (job,) = jobs_of(kube, ns, "missing")
    assert job["status"]["failed"] == 1, "bad input must not burn retries"
    assert job_condition(job, "Failed")["reason"] == "PodFailurePolicy"  # type: ignore[index]
    assert obj["status"]["attempts"] == 1


def test_corrupt_input_fails_with_invalid_input(kube: Kube, tj_namespace: str, s3: Any,
                                                media: dict[str, Path]) -> None:
    ns = tj_namespace
    kube.create(tj_path(ns), tj("corrupt", upload(s3, media["corrupt"])))
    obj = wait_phase(kube, ns, "corrupt", ("Failed", "Succeeded"))
    assert obj["status"]["phase"] == "Failed"
    assert obj["status"]["reason"] == "InvalidInput", obj["status"]
    assert jobs_of(kube, ns, "corrupt")[0]["status"]["failed"] == 1
    assert "Failed" in wait_for("Failed event", lambda: events_of(kube, ns, "corrupt"))


def test_killed_worker_is_retried_then_succeeds(kube: Kube, tj_namespace: str, s3: Any, media: dict[str, Path],
                                                cluster: ClusterState) -> None:
    ns = tj_namespace
    kube.create(tj_path(ns), tj("killed", upload(s3, media["long"]), slow_output(uuid.uuid4().hex)))
    wait_for("transcoding", lambda: ((get_tj(kube, ns, "killed").get("status") or {}).get("progress") or {})
             .get("stage") == "Transcoding", timeout=120)
    (pod,) = [p for p in pods_of(kube, ns, "killed") if p["status"].get("phase") == "Running"]
    os.kill(worker_pid(cluster, pod), signal.SIGKILL)
    obj = wait_phase(kube, ns, "killed", ("Succeeded", "Failed"), timeout=300)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert obj["status"]["attempts"] == 2
    assert "Retrying" in events_of(kube, ns, "killed")


@pytest.fixture(scope="module")
def big_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of near-lossless noise, > 2 multipart parts (16 MiB) even when only remuxed."""
    path = tmp_path_factory.mktemp("big") / "big.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "3",
                    "-vf", "noise=alls=60:allf=t", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0",
                    "-c:a", "aac", "-shortest", str(path)], check=True, timeout=120)
    assert path.stat().st_size > 24 * 1024 * 1024
    return path


def multipart_uploads(s3: Any, key: str) -> list[Obj]:
    """Unfinished multipart uploads of exactly `key` (MinIO lists them by exact object name only)."""
    uploads = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=key).get("Uploads") or []
    return [u for u in uploads if u["Key"] == key]


def keys_under(s3: Any, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents") or []]


def test_cancel_while_uploading_leaves_nothing_behind(kube: Kube, tj_namespace: str, s3: Any, big_clip: Path,
                                                      cluster: ClusterState) -> None:
    """Cancelled half-way through Uploading (the test-only `stall-upload` fault holds the worker there): some
    objects of a multi-object hls output are written and a multipart upload of a large file has parts. After
    Cancelled, nothing is left: no object under the job's output prefix, no unfinished multipart upload."""
    ns = tj_namespace
    prefix = f"outputs/{uuid.uuid4().hex}/"
    big_key = f"{prefix}remux.mp4"
    outputs = [{"name": "hls", "type": "hls", "uri": f"s3://{BUCKET}/{prefix}hls/",
                "streaming": {"segmentSeconds": 1, "codec": "h264", "preset": "ultrafast",
                              "renditions": [{"resolution": "240p", "bitrate": "300k"}]},
                "audio": {"codec": "aac", "bitrate": "64k"}},
               {"name": "remux", "uri": f"s3://{BUCKET}/{big_key}", "container": "mp4",
                "video": {"codec": "copy"}, "audio": {"codec": "copy"}}]
    body = tj("cancelled", upload(s3, big_clip), outputs)
    body["metadata"]["annotations"] = {"transkube.dev/fault-injection": "stall-upload"}
    kube.create(tj_path(ns), body)

    def half_uploaded() -> bool:
        stage = ((get_tj(kube, ns, "cancelled").get("status") or {}).get("progress") or {}).get("stage")
        uploads = multipart_uploads(s3, big_key)
        return bool(stage == "Uploading" and keys_under(s3, f"{prefix}hls/") and uploads and
                    s3.list_parts(Bucket=BUCKET, Key=big_key, UploadId=uploads[0]["UploadId"]).get("Parts"))

    wait_for("objects and a multipart part uploaded, the worker held in Uploading", half_uploaded, timeout=180)
    written = keys_under(s3, prefix)
    assert written and all(k.startswith(f"{prefix}hls/") for k in written), written  # remux.mp4 not complete
    (pod,) = [p for p in pods_of(kube, ns, "cancelled") if p["status"].get("phase") == "Running"]
    pid = worker_pid(cluster, pod)

    kube.merge_patch(tj_path(ns, "cancelled"), {"spec": {"cancel": True}})
    obj = wait_phase(kube, ns, "cancelled", ("Cancelled",), timeout=60)
    assert obj["status"]["reason"] == "Cancelled"
    assert condition(obj, "Succeeded")["status"] == "False"  # type: ignore[index]
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    wait_for("worker Job deleted", lambda: not [j for j in jobs_of(kube, ns, "cancelled")
                                                if not j["metadata"]["name"].endswith("-cleanup")], timeout=60)
    wait_for("worker process gone", lambda: not Path(f"/proc/{pid}").exists(), timeout=30)
    wait_for("no object left under the output prefix", lambda: not keys_under(s3, prefix), timeout=60)
    assert not multipart_uploads(s3, big_key), "an unfinished multipart upload was left behind"
    assert not s3_exists(s3, f"s3://{BUCKET}/{big_key}")


def test_suspend_and_resume(kube: Kube, tj_namespace: str, s3: Any, media: dict[str, Path]) -> None:
    ns = tj_namespace
    kube.create(tj_path(ns), tj("paused", upload(s3, media["long"]), slow_output(uuid.uuid4().hex)))
    wait_phase(kube, ns, "paused", ("Running",), timeout=120)
    kube.merge_patch(tj_path(ns, "paused"), {"spec": {"suspend": True}})
    obj = wait_phase(kube, ns, "paused", ("Suspended",), timeout=60)
    assert condition(obj, "Ready")["reason"] == "Suspended"  # type: ignore[index]
    wait_for("pods stopped", lambda: not [p for p in pods_of(kube, ns, "paused")
                                          if p["status"].get("phase") in ("Pending", "Running")], timeout=60)
    assert jobs_of(kube, ns, "paused")[0]["spec"]["suspend"] is True
    kube.merge_patch(tj_path(ns, "paused"), {"spec": {"suspend": False}})
    obj = wait_phase(kube, ns, "paused", ("Succeeded", "Failed"), timeout=300)
    assert obj["status"]["phase"] == "Succeeded"
    assert {"Suspended", "Resumed"} <= set(events_of(kube, ns, "paused"))


def test_deleting_the_transcodejob_garbage_collects_its_job(kube: Kube, tj_namespace: str, s3: Any,
                                                            media: dict[str, Path]) -> None:
    ns = tj_namespace
    kube.create(tj_path(ns), tj("doomed", upload(s3, media["long"]), slow_output(uuid.uuid4().hex)))
    wait_for("Job created", lambda: jobs_of(kube, ns, "doomed"))
    kube.delete(tj_path(ns, "doomed"))
    wait_for("Job garbage-collected", lambda: not jobs_of(kube, ns, "doomed"), timeout=90)
    wait_for("pods garbage-collected", lambda: not pods_of(kube, ns, "doomed"), timeout=90)


def test_operator_restart_mid_job_creates_no_second_job(kube: Kube, tj_namespace: str, s3: Any,
                                                        media: dict[str, Path]) -> None:
    ns = tj_namespace
    kube.create(tj_path(ns), tj("restart", upload(s3, media["long"]), slow_output(uuid.uuid4().hex)))
    wait_phase(kube, ns, "restart", ("Running",), timeout=120)
    selector = "app.kubernetes.io/component=operator"
    (old,) = kube.get(f"/api/v1/namespaces/{OPERATOR_NS}/pods", labelSelector=selector)["items"]
    kube.delete(f"/api/v1/namespaces/{OPERATOR_NS}/pods/{old['metadata']['name']}")
    wait_for("a new operator pod running", lambda: any(
        p["metadata"]["uid"] != old["metadata"]["uid"] and p["status"].get("phase") == "Running"
        for p in kube.get(f"/api/v1/namespaces/{OPERATOR_NS}/pods", labelSelector=selector)["items"]), timeout=90)
    obj = wait_phase(kube, ns, "restart", ("Succeeded", "Failed"), timeout=300)
    assert obj["status"]["phase"] == "Succeeded"
    assert len(jobs_of(kube, ns, "restart")) == 1
    assert obj["status"]["attempts"] == 1


def test_gpu_job_lands_on_the_gpu_node_with_limits_and_tolerations(kube: Kube, tj_namespace: str, s3: Any,
                                                                    media: dict[str, Path]) -> None:
    ns = tj_namespace
    kube.create(tj_path(ns), tj("gpu", upload(s3, media["short"]), accelerator={"type": "nvidia"}))
    pod = wait_for("GPU pod scheduled", lambda: next(
        (p for p in pods_of(kube, ns, "gpu") if p["spec"].get("nodeName")), None))
    assert pod["spec"]["nodeName"] == GPU_NODE.name
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"]
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TRANSKUBE_ACCELERATOR"] == "nvidia"
    assert get_tj(kube, ns, "gpu")["status"]["accelerator"] == {"requested": "nvidia", "effective": "nvidia"}
    # There is no NVENC here, so the pod may already have failed as Unsupported; either way it ends.
    kube.merge_patch(tj_path(ns, "gpu"), {"spec": {"cancel": True}})
    wait_phase(kube, ns, "gpu", ("Cancelled", "Failed"), timeout=60)


def test_gpu_job_falls_back_to_cpu_when_no_gpu_node_fits(kube: Kube, tj_namespace: str, s3: Any,
                                                         media: dict[str, Path]) -> None:
    ns = tj_namespace
    # Take the only GPU so the GPU job cannot schedule.
    hog = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "gpu-hog"}, "spec": {
        "containers": [{"name": "c", "image": "x", "command": ["sleep", "300"],
                        "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                            "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}}],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "terminationGracePeriodSeconds": 1}}
    kube.create(f"/api/v1/namespaces/{ns}/pods", hog)
    wait_for("GPU taken", lambda: kube.get(f"/api/v1/namespaces/{ns}/pods/gpu-hog")["spec"].get("nodeName"))
    kube.create(tj_path(ns), tj("fallback", upload(s3, media["short"]),
                                accelerator={"type": "nvidia", "fallback": "cpu", "fallbackAfterSeconds": 10}))
    obj = wait_phase(kube, ns, "fallback", ("Succeeded", "Failed"), timeout=240)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert obj["status"]["accelerator"]["effective"] == "cpu"
    assert "no GPU node took the job" in obj["status"]["accelerator"]["reason"]
    assert "FallbackToCPU" in events_of(kube, ns, "fallback")
    nodes = {p["spec"].get("nodeName") for p in pods_of(kube, ns, "fallback")
             if p["metadata"]["labels"].get("transkube.dev/accelerator") == "cpu"}
    assert nodes == {CPU_NODE.name}


def test_operator_serves_metrics_liveness_and_json_logs(operator: InstalledOperator, tj_namespace: str, kube: Kube,
                                                       s3: Any, media: dict[str, Path],
                                                       kubectl: Callable[..., Any]) -> None:
    ns = tj_namespace
    kube.create(tj_path(ns), tj("metered", upload(s3, media["short"])))
    wait_phase(kube, ns, "metered", ("Succeeded", "Failed"))
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.liveness_port}/healthz", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'transkube_transcodejobs{phase="Succeeded"}' in text
    assert "transkube_transcodejob_duration_seconds_bucket" in text
    assert "transkube_reconcile_errors_total" in text
    logs = kubectl("logs", "-n", operator.namespace, "deploy/transkube-operator").stdout.splitlines()
    records = [json.loads(line) for line in logs if line.startswith("{")]
    assert records, "operator logs are JSON lines"
    assert any((r.get("object") or {}).get("name") == "metered" and (r.get("object") or {}).get("namespace") == ns
               for r in records), "per-object log lines name the TranscodeJob"
