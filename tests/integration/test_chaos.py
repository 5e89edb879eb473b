"""Chaos on the local cluster: one component of the platform stops mid-run and comes back, and every
TranscodeJob still ends well.

- kube-apiserver restarted with jobs in flight and queued: all succeed, and the operator rides it out in the
  same process (no container restart).
- the S3 server down for 30 s while one worker downloads and another uploads: the attempts it hits fail as
  Transient, are retried, and succeed; no half object and no incomplete multipart upload is left.
- kube-controller-manager (the Job controller) stopped for 20 s: nothing lost, nothing duplicated.

Each test restarts what it stopped in a `finally`, so the tests after it get a healthy cluster. Timing comes
from the cluster's own state (a job's stage in status) and from the test-only `slow-transfers` fault, which
keeps a worker's transfers slow enough to stop S3 under them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from transkube_api.constants import ANNOTATION_FAULT_ATTEMPTS, ANNOTATION_FAULT_INJECTION, LABEL_ROLE
from transkube_dev import procs
from transkube_dev.cluster import ClusterState, LocalCluster
from transkube_dev.kube import Kube, Obj

from .conftest import OPERATOR_NS, InstalledOperator, tj_path, wait_for
from .test_transcodejob import BUCKET, get_tj, media, tj, upload

__all__ = ["media"]  # the session fixture, shared with test_transcodejob

LABEL_TJ = "transkube.dev/transcodejob"  # the operator's label on every Job and pod of a TranscodeJob
DONE = ("Succeeded", "Failed")


# ---- helpers -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def stopped(cluster: ClusterState, component: str, grace: float = 10.0) -> Iterator[LocalCluster]:
    """`component` stopped for the body of the `with`; always started again (and healthy) after it."""
    local = LocalCluster(Path(cluster.dir))
    local.stop_component(component, grace=grace)
    try:
        yield local
    finally:
        pid = ClusterState.load(Path(cluster.dir)).pids.get(component)
        if not (pid and procs.alive(pid)):
            local.start_component(component)


def small_output(prefix: str) -> list[Obj]:
    """A tiny, fast file output under `prefix` (a few hundred ms of ffmpeg per short input)."""
    return [{"name": "o", "uri": f"s3://{BUCKET}/{prefix}/o.mp4", "container": "mp4",
             "video": {"codec": "h264", "crf": 35, "preset": "ultrafast", "width": 160, "height": 90},
             "audio": {"codec": "aac"}}]


def status_of(kube: Kube, ns: str, name: str) -> Obj:
    return dict(get_tj(kube, ns, name).get("status") or {})


def wait_all_done(kube: Kube, ns: str, names: list[str], timeout: float) -> dict[str, Obj]:
    """Every named TranscodeJob Succeeded or Failed (API errors while the control plane settles are retried)."""
    def done() -> dict[str, Obj] | None:
        objs = {n: get_tj(kube, ns, n) for n in names}
        return objs if all((o.get("status") or {}).get("phase") in DONE for o in objs.values()) else None

    try:
        result: dict[str, Obj] = wait_for(f"{len(names)} jobs finished", done, timeout=timeout, interval=1)
    except AssertionError as exc:
        states = {n: (status_of(kube, ns, n).get("phase"), status_of(kube, ns, n).get("progress")) for n in names}
        raise AssertionError(f"{exc}; states: {states}") from None
    return result


def jobs_by_tj(kube: Kube, ns: str) -> Counter[str]:
    """How many worker Jobs (not cleanup Jobs) each TranscodeJob has, by the operator's labels."""
    items = kube.get(f"/apis/batch/v1/namespaces/{ns}/jobs", labelSelector=f"{LABEL_TJ},!{LABEL_ROLE}")["items"]
    return Counter(j["metadata"]["labels"][LABEL_TJ] for j in items)


def output_keys(s3: Any, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def assert_outputs_whole(s3: Any, obj: Obj, prefix: str) -> None:
    """Under `prefix` exactly the outputs in status, each the very bytes status describes, and no incomplete
    multipart upload (MinIO lists those by exact object name, so each key is asked for too)."""
    outputs = obj["status"]["outputs"]
    keys = [o["uri"].split("/", 3)[3] for o in outputs]
    assert output_keys(s3, prefix) == sorted(keys), (prefix, keys)
    for out, key in zip(outputs, keys, strict=True):
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert len(body) == out["sizeBytes"], out
        assert "sha256:" + hashlib.sha256(body).hexdigest() == out["checksum"], out
        for listed in (key, prefix):
            uploads = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=listed).get("Uploads", [])
            assert uploads == [], f"incomplete multipart uploads under {listed}: {uploads}"


def worker_log_fields(kubectl: Callable[..., subprocess.CompletedProcess[str]], ns: str, pod: str,
                      msg: str) -> Obj:
    """The structured fields of the worker's (JSON) log line `msg` in `pod`."""
    lines = kubectl("logs", "-n", ns, pod).stdout.splitlines()
    docs = [json.loads(line) for line in lines if line.startswith("{")]
    (doc,) = [d for d in docs if d.get("msg") == msg]
    return dict(doc)


def operator_processes(cluster: ClusterState, kube: Kube) -> dict[str, tuple[int, int]]:
    """Each operator pod's uid -> (restartCount, pid of its container's process, from the node agent)."""
    pods = kube.get(f"/api/v1/namespaces/{OPERATOR_NS}/pods",
                    labelSelector="app.kubernetes.io/component=operator")["items"]
    result = {}
    for pod in pods:
        meta = pod["metadata"]
        (status,) = [s for s in pod["status"].get("containerStatuses", []) if s["name"] == "operator"]
        pid_file = (Path(cluster.dir) / "agent" / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"
                    / "containers" / "operator" / "pid")
        result[meta["uid"]] = (int(status["restartCount"]), int(pid_file.read_text()))
    return result


# ---- kube-apiserver restarted mid-run --------------------------------------------------------------

def test_apiserver_restart_mid_run(cluster: ClusterState, kube: Kube, tj_namespace: str, s3: Any,
                                   media: dict[str, Path], operator: InstalledOperator) -> None:
    ns = tj_namespace
    before = operator_processes(cluster, kube)
    assert before and all(restarts == 0 for restarts, _ in before.values()), before
    short = upload(s3, media["short"])
    # In flight: three in the roomy cpu pool. Queued: four behind one another in the one-slot serial pool.
    names = [f"cpu{i}" for i in range(3)] + [f"serial{i}" for i in range(4)]
    for name in names:
        pool = "serial" if name.startswith("serial") else "cpu"
        kube.create(tj_path(ns), tj(name, short, small_output(f"chaos/{ns}/{name}"), pool=pool))
    wait_for("jobs running and queued", lambda: (
        (phases := Counter(status_of(kube, ns, n).get("phase") for n in names))["Running"] >= 1
        and phases["Queued"] >= 2), timeout=90)

    with stopped(cluster, "kube-apiserver") as local:
        time.sleep(5)  # down long enough for every watch and request to notice
        local.start_component("kube-apiserver")

    objs = wait_all_done(kube, ns, names, timeout=180)
    phases = {n: o["status"]["phase"] for n, o in objs.items()}
    assert set(phases.values()) == {"Succeeded"}, {n: o["status"] for n, o in objs.items()}
    # The operator recovered on its own: the same pods, the same processes, no restart.
    assert operator_processes(cluster, kube) == before
    assert jobs_by_tj(kube, ns) == Counter({n: 1 for n in names})


# ---- S3 down for 30 s under a download and an upload ------------------------------------------------

@pytest.fixture(scope="module")
def heavy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Nearly incompressible inputs (lossless noise, ~11 MB per second of video); outputs copy the streams, so
    an output is as big as its input and takes several multipart parts under the slow-transfers fault."""
    d = tmp_path_factory.mktemp("chaos-media")

    def make(name: str, seconds: float) -> Path:
        path = d / name
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25,noise=alls=60:allf=t",
                        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
                        "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-c:a", "aac", "-shortest",
                        str(path)], check=True, timeout=120)
        return path

    return {"upload": make("upload.mp4", 0.8), "download": make("download.mp4", 2.4)}


def copy_output(prefix: str) -> list[Obj]:
    return [{"name": "copy", "uri": f"s3://{BUCKET}/{prefix}/copy.mp4", "container": "mp4",
             "video": {"codec": "copy"}, "audio": {"codec": "copy"}}]


def slowed(body: Obj) -> Obj:
    """The first attempt's transfers are slow (test-only fault); the retries run at full speed."""
    body["metadata"]["annotations"] = {ANNOTATION_FAULT_INJECTION: "slow-transfers", ANNOTATION_FAULT_ATTEMPTS: "1"}
    return body


def test_s3_outage_under_download_and_upload(cluster: ClusterState, kube: Kube, tj_namespace: str, s3: Any,
                                             heavy: dict[str, Path],
                                             kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    ns = tj_namespace
    sizes = {k: p.stat().st_size for k, p in heavy.items()}
    # At 1 MiB/s in 5 MiB parts: the uploader uploads for ~8 s after downloading for as long, while the
    # downloader is still in its ~24 s download; the outage then hits both in the middle of a transfer.
    assert 6 * 2**20 < sizes["upload"] < 12 * 2**20 and sizes["download"] > 2.5 * sizes["upload"], sizes
    prefixes = {k: f"chaos/{ns}/{k}" for k in heavy}
    for name, path in heavy.items():
        kube.create(tj_path(ns), slowed(tj(name, upload(s3, path), copy_output(prefixes[name]), retryLimit=6)))

    def stage(name: str) -> str | None:
        return (status_of(kube, ns, name).get("progress") or {}).get("stage")

    def sending() -> bool:
        # Uploading spans 95-100 %: above 95 the first part's bytes flow, so its multipart upload exists.
        progress = status_of(kube, ns, "upload").get("progress") or {}
        return progress.get("stage") == "Uploading" and 95 < progress.get("percent", 0) < 100

    wait_for("the uploader sending its first part", sending, timeout=120, interval=0.2)
    at_stop = {n: status_of(kube, ns, n).get("progress") for n in heavy}
    assert stage("download") == "Downloading", at_stop
    with stopped(cluster, "s3", grace=0):  # SIGKILL: connections drop mid-request
        time.sleep(30)

    objs = wait_all_done(kube, ns, list(heavy), timeout=240)
    for name, obj in objs.items():
        status = obj["status"]
        history = status.get("attemptHistory") or []
        assert status["phase"] == "Succeeded", (name, status, at_stop)
        *failed, final = history
        assert failed, f"{name}: the outage hit no attempt ({history}, at stop: {at_stop})"
        for entry in failed:
            assert entry["failureClass"] == "Transient" and entry["reason"] == "TransientError", (name, entry)
            assert entry["exitCode"] == 20 and entry["counted"] is True, (name, entry)
        assert final["exitCode"] == 0 and final["reason"] == "Succeeded", (name, final)
        assert status["attempts"] == len(history)
        assert_outputs_whole(s3, obj, prefixes[name] + "/")
    # The uploader's first attempt died in the middle of a multipart upload, which S3 could not abort then; the
    # successful attempt aborted it before uploading (its log says so), so the empty listings above mean something.
    first, *_, final = objs["upload"]["status"]["attemptHistory"]
    assert first["message"].startswith("storage unreachable on upload"), first
    assert worker_log_fields(kubectl, ns, final["pod"], "aborted stale multipart uploads")["aborted"] == 1


# ---- the Job controller (kube-controller-manager) stopped for 20 s ------------------------------------

def test_job_controller_gap(cluster: ClusterState, kube: Kube, tj_namespace: str, s3: Any,
                            media: dict[str, Path]) -> None:
    ns = tj_namespace
    short = upload(s3, media["short"])
    names = [f"cpu{i}" for i in range(3)] + [f"serial{i}" for i in range(3)]
    for name in names[:4]:
        pool = "serial" if name.startswith("serial") else "cpu"
        kube.create(tj_path(ns), tj(name, short, small_output(f"chaos/{ns}/{name}"), pool=pool))
    wait_for("a job running", lambda: any(status_of(kube, ns, n).get("phase") == "Running" for n in names[:4]),
             timeout=90)
    with stopped(cluster, "kube-controller-manager"):
        # Arrivals while nobody turns Jobs into pods; running pods end unseen by the Job controller.
        for name in names[4:]:
            kube.create(tj_path(ns), tj(name, short, small_output(f"chaos/{ns}/{name}"), pool="serial"))
        time.sleep(20)
        # The gap is real: nobody made pods for the late arrivals' Jobs.
        assert not [p for n in names[4:] for p in kube.get(f"/api/v1/namespaces/{ns}/pods",
                                                            labelSelector=f"{LABEL_TJ}={n}")["items"]]

    objs = wait_all_done(kube, ns, names, timeout=180)
    assert {n: o["status"]["phase"] for n, o in objs.items()} == {n: "Succeeded" for n in names}, \
        {n: o["status"] for n, o in objs.items()}
    # Exactly one Job and one attempt per TranscodeJob, and one output each.
    assert jobs_by_tj(kube, ns) == Counter({n: 1 for n in names})
    for name, obj in objs.items():
        status = obj["status"]
        assert status["attempts"] == 1 and len(status["attemptHistory"]) == 1, (name, status)
        assert status["jobName"] == name
        assert_outputs_whole(s3, obj, f"chaos/{ns}/{name}/")
    pods = kube.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=LABEL_TJ)["items"]
    assert Counter(p["metadata"]["labels"][LABEL_TJ] for p in pods) == Counter({n: 1 for n in names})
