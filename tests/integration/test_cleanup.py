"""Orphaned partial outputs: an attempt SIGKILLed mid-job (as the OOM killer or a lost node would) cannot clean
up after itself; the operator then runs the cleanup Job, which aborts the job's incomplete multipart uploads and
deletes what it wrote under its outputs, and nothing else. Real MinIO, real Jobs."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

from transkube_dev.kube import Kube

from .conftest import ClusterState, tj_path, wait_for
from .test_transcodejob import BUCKET, get_tj, media, pods_of, s3_exists, tj, upload, wait_phase, worker_pid

__all__ = ["media"]


def test_a_killed_attempt_leaves_nothing_behind(kube: Kube, tj_namespace: str, s3: Any, media: dict[str, Path],
                                                cluster: ClusterState) -> None:
    ns = tj_namespace
    prefix = f"outputs/{uuid.uuid4().hex}"
    key = f"{prefix}/web.mp4"
    # Written before the job existed: not the job's, must survive.
    s3.put_object(Bucket=BUCKET, Key=f"{key}.bak", Body=b"older")
    input_uri = upload(s3, media["long"])
    outputs = [{"name": "web", "uri": f"s3://{BUCKET}/{key}", "container": "mp4",
                "video": {"codec": "h264", "preset": "slower", "crf": 23}, "audio": {"codec": "aac"}}]
    kube.create(tj_path(ns), tj("doomed", input_uri, outputs, retryLimit=0))
    wait_for("transcoding", lambda: ((get_tj(kube, ns, "doomed").get("status") or {}).get("progress") or {})
             .get("stage") == "Transcoding", timeout=120)
    # What a worker killed mid-upload leaves: a partial object and an unfinished multipart upload.
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"partial")
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 1024)
    (pod,) = [p for p in pods_of(kube, ns, "doomed") if p["status"].get("phase") == "Running"]
    os.kill(worker_pid(cluster, pod), signal.SIGKILL)

    obj = wait_phase(kube, ns, "doomed", ("Failed",), timeout=180)
    assert obj["status"]["attemptHistory"][-1]["exitCode"] == 137
    cleanup = wait_for("cleanup finished", lambda: (get_tj(kube, ns, "doomed")["status"].get("cleanup") or {})
                       .get("state") in ("Succeeded", "Failed") and get_tj(kube, ns, "doomed")["status"]["cleanup"],
                       timeout=180)
    assert cleanup["state"] == "Succeeded", cleanup
    assert cleanup["jobName"] == "doomed-cleanup"
    assert "aborted 1 multipart upload(s), deleted 1 object(s)" in cleanup["message"]
    assert not s3_exists(s3, f"s3://{BUCKET}/{key}")
    assert s3.list_multipart_uploads(Bucket=BUCKET, Prefix=key).get("Uploads", []) == []
    assert s3_exists(s3, f"s3://{BUCKET}/{key}.bak") and s3_exists(s3, input_uri)
    events = [e["reason"] for e in kube.get(f"/api/v1/namespaces/{ns}/events")["items"]
              if e["involvedObject"].get("name") == "doomed"]
    assert "CleanupStarted" in events and "CleanedUp" in events
