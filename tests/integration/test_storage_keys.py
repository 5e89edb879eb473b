"""S3 object keys as people name them: spaces, unicode, `+ & # % =` round-trip through a presigned upload (shim),
a job's input, a file output and prefix outputs (thumbnails, HLS with its playlists), a presigned download (shim
API and CLI) and the CLI's direct download; control characters and empty keys are refused with the field named,
at `kubectl apply` (API server), by the shim (422) and by the CLI. One rule: transkube_api.s3uri."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from transkube_dev.cluster import ClusterState
from transkube_dev.kube import Kube

from .conftest import tj_path, wait_for
from .shim_fixtures import *  # noqa: F403 (fixtures)
from .shim_fixtures import BUCKET, Tenant
from .test_cli import cli, direct_env, ok, shim_env

pytestmark = pytest.mark.integration

# What people call their files: every character here is part of the key, taken literally.
NAME = "Mÿ clip + friends & #1 50% = 東京"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def key_of(uri: str) -> str:
    return uri.removeprefix(f"s3://{BUCKET}/")


def finished(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = kube.get(tj_path(namespace, name)).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None
    status: dict[str, Any] = wait_for(f"{name} finished", done, timeout=240)
    assert status["phase"] == "Succeeded", status
    return status


def presigned_upload(t: Tenant, path: Path, filename: str) -> str:
    data = path.read_bytes()
    started = t.post("/api/v1/uploads", json={"filename": filename, "size": len(data)})
    assert started.status_code == 201, started.text
    upload_id, count = started.json()["uploadId"], started.json()["partCount"]
    urls = t.post(f"/api/v1/uploads/{upload_id}/parts", json={"partNumbers": list(range(1, count + 1))}).json()
    size = started.json()["partSize"]
    parts = []
    for part in urls["parts"]:
        n = part["partNumber"]
        put = requests.put(part["url"], data=data[(n - 1) * size: n * size], timeout=60)
        assert put.status_code == 200, put.text
        parts.append({"partNumber": n, "etag": put.headers["ETag"]})
    done = t.post(f"/api/v1/uploads/{upload_id}/complete", json={"parts": parts})
    assert done.status_code == 200, done.text
    uri: str = done.json()["uri"]
    assert uri == started.json()["uri"]
    return uri


def test_people_named_keys_round_trip(tenant: Callable[..., Tenant], kube: Kube, s3: Any, cluster: ClusterState,
                                      kubectl: Callable[..., Any], media_files: dict[str, Path],
                                      tmp_path: Path) -> None:
    t = tenant()  # its namespace holds the workers' storage Secret
    # Presigned upload through the shim: the file name ends the key, exactly as given.
    source = presigned_upload(t, media_files["short"], f"{NAME}.mp4")
    assert re.fullmatch(rf"s3://{BUCKET}/uploads/{t.name}/[0-9a-f]{{32}}/{re.escape(NAME)}\.mp4", source), source
    head = s3.head_object(Bucket=BUCKET, Key=key_of(source))
    assert head["ContentLength"] == media_files["short"].stat().st_size

    # A file output through the shim, and prefix outputs (thumbnails, HLS) through kubectl, from that input.
    file_uri = t.uri(f"out {NAME}/{NAME}.mp4")
    created = t.post("/api/v1/jobs", json={"input": {"uri": source}, "outputs": [{
        "name": "web", "uri": file_uri, "container": "mp4",
        "video": {"codec": "h264", "resolution": "240p", "crf": 32, "preset": "ultrafast"},
        "audio": {"codec": "aac", "bitrate": "64k"}}]})
    assert created.status_code == 201, created.text
    shim_job = created.json()["name"]
    prefixes = {"thumbs": t.uri(f"thumbs {NAME}/"), "hls": t.uri(f"hls {NAME}/")}
    direct_job = f"keys-{uuid.uuid4().hex[:6]}"
    manifest = {"apiVersion": "media.transkube.dev/v1alpha1", "kind": "TranscodeJob",
                "metadata": {"name": direct_job, "namespace": t.namespace},
                "spec": {"input": {"uri": source}, "outputs": [
                    {"name": "thumbs", "type": "thumbnails", "uri": prefixes["thumbs"],
                     "thumbnails": {"intervalSeconds": 1, "width": 160}},
                    {"name": "hls", "type": "hls", "uri": prefixes["hls"],
                     "streaming": {"segmentSeconds": 1, "preset": "ultrafast",
                                   "renditions": [{"resolution": "240p", "bitrate": "200k"}]},
                     "audio": {"codec": "aac", "bitrate": "64k"}}]}}
    applied = kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert applied.returncode == 0, applied.stderr  # a space in a URI used to be refused here

    # The file output: status names the key as written; the object is there under exactly that key.
    status = finished(kube, t.namespace, shim_job)
    (web,) = status["outputs"]
    assert web["uri"] == file_uri
    body = s3.get_object(Bucket=BUCKET, Key=key_of(file_uri))["Body"].read()
    assert sha256(body) == web["checksum"]
    # Presigned download through the shim: boto3 signs the literal key (%23 for #, %2B for +, ...).
    link = t.get(f"/api/v1/jobs/{shim_job}/outputs/web/url")
    assert link.status_code == 200, link.text
    assert link.json()["uri"] == file_uri and "%23" in link.json()["url"] and "%2B" in link.json()["url"]
    fetched = requests.get(link.json()["url"], timeout=30)
    assert fetched.status_code == 200 and sha256(fetched.content) == web["checksum"]
    # ... and with the CLI through the shim: the file keeps its name.
    got = cli(shim_env(t), "outputs", shim_job, "--download", str(tmp_path / "shim"))
    ok(got)
    assert "sha256 ok" in got.stderr, got.stderr
    assert sha256((tmp_path / "shim" / f"{NAME}.mp4").read_bytes()) == web["checksum"]

    # The prefix outputs: every file under the literal prefix, the playlists relative to it.
    status = finished(kube, t.namespace, direct_job)
    results = {o["name"]: o for o in status["outputs"]}
    for name, prefix in prefixes.items():
        assert results[name]["uri"] == prefix
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=key_of(prefix))["Contents"]
        assert sorted(o["Key"] for o in listed) == sorted(key_of(prefix) + f for f in results[name]["files"])
    hls = results["hls"]
    master = s3.get_object(Bucket=BUCKET, Key=key_of(prefixes["hls"]) + "master.m3u8")["Body"].read().decode()
    for playlist in [line for line in master.splitlines() if line and not line.startswith("#")]:
        assert playlist in hls["files"], (playlist, hls["files"])
        media = s3.get_object(Bucket=BUCKET, Key=key_of(prefixes["hls"]) + playlist)["Body"].read().decode()
        refs = re.findall(r'URI="([^"]+)"', media) + [line for line in media.splitlines()
                                                       if line and not line.startswith("#")]
        assert refs and all(ref in hls["files"] for ref in refs), (refs, hls["files"])
    # The CLI's direct download (storage credentials, boto3): every file of each prefix output.
    ok(cli(direct_env(cluster), "outputs", direct_job, "-n", t.namespace, "--download", str(tmp_path / "direct")))
    for name in prefixes:
        written = sorted(p.relative_to(tmp_path / "direct" / name).as_posix()
                         for p in (tmp_path / "direct" / name).rglob("*") if p.is_file())
        assert written == sorted(results[name]["files"]), name


@pytest.mark.parametrize(("uri", "what"), [("s3://transkube/in\tput.mp4", "control"),
                                           ("s3://transkube/nul\u0001.mp4", "control"),
                                           ("s3://transkube/", "empty")])
def test_control_characters_and_empty_keys_are_refused_naming_the_field(
        uri: str, what: str, tenant: Callable[..., Tenant], tj_namespace: str, cluster: ClusterState,
        kubectl: Callable[..., Any]) -> None:
    good = "s3://transkube/x/ok.mp4"
    manifest = {"apiVersion": "media.transkube.dev/v1alpha1", "kind": "TranscodeJob",
                "metadata": {"name": f"bad-{uuid.uuid4().hex[:6]}", "namespace": tj_namespace},
                "spec": {"input": {"uri": uri}, "outputs": [{"name": "o", "uri": good, "container": "mp4"}]}}
    # The API server (the CRD's pattern), field named.
    refused = kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert refused.returncode != 0 and "spec.input.uri" in refused.stderr and "Invalid value" in refused.stderr, \
        refused.stderr
    manifest["spec"]["input"]["uri"], manifest["spec"]["outputs"][0]["uri"] = good, uri
    refused = kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert refused.returncode != 0 and "spec.outputs[0].uri" in refused.stderr, refused.stderr
    # The shim: 422 naming the field, with what is wrong.
    t = tenant()
    resp = t.post("/api/v1/jobs", json={"input": {"uri": t.uri("in.mp4")},
                                        "outputs": [{"name": "o", "uri": uri, "container": "mp4"}]})
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "validation_error" and error["field"] == "outputs[0].uri", error
    assert ("control character" if what == "control" else "the object key is empty") in error["message"]
    if what == "control":
        bad_name = t.post("/api/v1/uploads", json={"filename": uri.rsplit("/", 1)[1]})
        assert bad_name.status_code == 422 and bad_name.json()["error"]["field"] == "filename", bad_name.text
    # The CLI, before anything is sent.
    result = cli(direct_env(cluster), "submit", "-n", tj_namespace, "--input", uri, "--output",
                 "name=o,uri=s3://transkube/x/o.mp4,container=mp4", "--dry-run")
    assert result.returncode != 0 and "input.uri" in result.stderr, (result.stdout, result.stderr)
