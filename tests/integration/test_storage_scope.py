"""Tenants cannot touch each other's objects. Two shim tenants, and two kubectl namespaces confined by the chart
(conftest: storageScope.namespaces), try to read, overwrite and presign each other's objects through every entry
point: shim job create (input, output, prefix output, watermark, preset job), shim presigned upload (another
tenant's or a forged upload id, a file name that climbs), shim presigned download (also of a job created with
kubectl in the tenant's namespace), `kubectl apply` (the ValidatingAdmissionPolicy) and the operator's re-check
(with the policy binding set to Audit). Each attempt is refused with its code or reason, naming the field, and no
victim object changes (checksums before and after)."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from transkube_dev.cluster import ClusterState
from transkube_dev.kube import Kube
from transkube_shim.storage import encode_upload_id

from .conftest import SCOPE_NAMESPACES, SHARED_PREFIX, create_if_absent, tj_path, wait_for
from .shim_fixtures import *  # noqa: F403 (fixtures)
from .shim_fixtures import BUCKET, Tenant
from .test_cli import cli, shim_env

pytestmark = pytest.mark.integration
POLICY = "transkube-storage-scope"  # the chart's ValidatingAdmissionPolicy (and binding) of release "transkube"
BINDING_PATH = f"/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/{POLICY}"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")


def snapshot(s3: Any, keys: list[str]) -> dict[str, tuple[str, str, Any]]:
    """Each victim object's sha256, ETag and LastModified: any write would change them."""
    out = {}
    for key in keys:
        obj = s3.get_object(Bucket=BUCKET, Key=key)
        out[key] = (hashlib.sha256(obj["Body"].read()).hexdigest(), obj["ETag"], obj["LastModified"])
    return out


def key_of(uri: str) -> str:
    return uri.removeprefix(f"s3://{BUCKET}/")


def refused(resp: requests.Response, status: int, code: str, field: str) -> str:
    assert resp.status_code == status, (field, resp.status_code, resp.text)
    error = resp.json()["error"]
    assert (error["code"], error.get("field")) == (code, field), error
    return str(error["message"])


def output(uri: str, **extra: Any) -> dict[str, Any]:
    if uri.endswith("/"):
        return {"name": "o", "type": "thumbnails", "uri": uri, "thumbnails": {"intervalSeconds": 1}, **extra}
    return {"name": "o", "uri": uri, "container": "mp4", **extra}


def watermarked(uri: str, mark: str) -> dict[str, Any]:
    return output(uri, filters={"watermark": {"uri": mark}})


def test_shim_tenants_cannot_read_overwrite_or_presign_each_others_objects(
        tenant: Callable[..., Tenant], kube: Kube, s3: Any, media_files: Any) -> None:
    a, b = tenant(), tenant(fresh=True)
    # The victim's objects: an input, an output, a watermark, a completed upload and one in progress.
    victim = {"input": b.uri("in.mp4"), "output": b.uri("out.mp4"), "logo": b.uri("logo.png")}
    s3.upload_file(str(media_files["short"]), BUCKET, key_of(victim["input"]))
    s3.put_object(Bucket=BUCKET, Key=key_of(victim["output"]), Body=b"b's transcoded output")
    s3.put_object(Bucket=BUCKET, Key=key_of(victim["logo"]), Body=PNG)
    done = b.post("/api/v1/uploads", json={"filename": "b's upload.mp4"}).json()
    part = b.post(f"/api/v1/uploads/{done['uploadId']}/parts", json={"partNumbers": [1]}).json()["parts"][0]
    etag = requests.put(part["url"], data=b"b's uploaded bytes", timeout=30).headers["ETag"]
    assert b.post(f"/api/v1/uploads/{done['uploadId']}/complete",
                  json={"parts": [{"partNumber": 1, "etag": etag}]}).status_code == 200
    victim["upload"] = done["uri"]
    pending = b.post("/api/v1/uploads", json={"filename": "pending.mp4"}).json()
    keys = [key_of(u) for u in victim.values()]
    before = snapshot(s3, keys)
    jobs_before = len(kube.get(tj_path(a.namespace))["items"])
    mine_in, mine_out = a.uri("in.mp4"), a.uri(f"out/{uuid.uuid4().hex}.mp4")

    def create(spec_input: str, *outputs: dict[str, Any]) -> requests.Response:
        return a.post("/api/v1/jobs", json={"input": {"uri": spec_input}, "outputs": list(outputs), "suspend": True})

    # Read B's objects, overwrite them, write under B's prefix: 403 uri_forbidden, field named.
    message = refused(create(victim["input"], output(mine_out)), 403, "uri_forbidden", "input.uri")
    assert message.startswith(f"input.uri: {victim['input']} is outside what tenant {a.name} may read")
    refused(create(victim["upload"], output(mine_out)), 403, "uri_forbidden", "input.uri")  # B's upload area
    refused(create(mine_in, output(victim["output"])), 403, "uri_forbidden", "outputs[0].uri")
    refused(create(mine_in, output(b.uri("thumbs/"))), 403, "uri_forbidden", "outputs[0].uri")
    refused(create(mine_in, output(mine_out), {**output(victim["output"]), "name": "p"}), 403, "uri_forbidden",
            "outputs[1].uri")
    refused(create(mine_in, watermarked(mine_out, victim["logo"])), 403, "uri_forbidden",
            "outputs[0].filters.watermark.uri")
    # Tricks: a sibling prefix that starts like A's, dot segments (plain, encoded, backslashes), another case.
    for trick in (f"s3://{BUCKET}/{a.name}-evil/x.mp4", a.uri(f"../{b.name}/out.mp4"),
                  a.uri(f"%2e%2e/{b.name}/out.mp4"), a.uri(f"..%2F{b.name}/out.mp4"),
                  a.uri(f"x\\..\\..\\{b.name}\\out.mp4"), f"s3://{BUCKET}/{a.name.upper()}/x.mp4",
                  f"s3://{BUCKET}/uploads/{a.name}/../{b.name}/x.mp4"):
        refused(create(mine_in, output(trick)), 403, "uri_forbidden", "outputs[0].uri")
    # A preset job names the request's fields.
    preset = {"input": {"uri": mine_in}, "outputUri": victim["output"]}
    refused(a.post("/api/v1/presets/web-720p/jobs", json=preset), 403, "uri_forbidden", "outputUri")
    refused(a.post("/api/v1/presets/web-720p/jobs", json={
        **preset, "outputUri": mine_out, "overrides": {"filters": {"watermark": {"uri": victim["logo"]}}}}),
        403, "uri_forbidden", "overrides.filters.watermark.uri")
    assert len(kube.get(tj_path(a.namespace))["items"]) == jobs_before  # nothing was created

    # Presigned upload: B's upload ids, forged ones (B's key with B's real S3 UploadId), a climbing file name.
    b_key, s3_upload_id = key_of(pending["uri"]), None
    for upload in s3.list_multipart_uploads(Bucket=BUCKET, Prefix=b_key).get("Uploads", []):
        s3_upload_id = upload["UploadId"]
    assert s3_upload_id
    for token in (pending["uploadId"], encode_upload_id(b_key, s3_upload_id),
                  encode_upload_id(f"uploads/{a.name}/../{b.name}/{b_key.rsplit('/', 2)[1]}/pending.mp4",
                                   s3_upload_id)):
        refused(a.post(f"/api/v1/uploads/{token}/parts", json={"partNumbers": [1]}), 403, "uri_forbidden",
                "upload_id")
        refused(a.post(f"/api/v1/uploads/{token}/complete", json={"parts": [{"partNumber": 1, "etag": "x"}]}),
                403, "uri_forbidden", "upload_id")
        refused(a.delete(f"/api/v1/uploads/{token}"), 403, "uri_forbidden", "upload_id")
    for name in (f"../{b.name}/x.mp4", "..", "%2e%2e"):
        resp = a.post("/api/v1/uploads", json={"filename": name})
        assert resp.status_code == 422 and resp.json()["error"]["field"] == "filename", resp.text
    # B's upload is still in progress: nobody aborted it.
    assert s3.list_parts(Bucket=BUCKET, Key=b_key, UploadId=s3_upload_id)["ResponseMetadata"]["HTTPStatusCode"] == 200

    # Presigned download: a job someone created with kubectl in A's namespace (not confined by the chart) that
    # names B's object; once it reports that output, the shim still will not presign it for A.
    sneaky = {"apiVersion": "media.transkube.dev/v1alpha1", "kind": "TranscodeJob",
              "metadata": {"name": f"sneaky-{uuid.uuid4().hex[:6]}"},
              "spec": {"suspend": True, "input": {"uri": mine_in}, "outputs": [output(victim["output"])]}}
    name = kube.create(tj_path(a.namespace), sneaky)["metadata"]["name"]
    kube.merge_patch(tj_path(a.namespace, name) + "/status", {"status": {"outputs": [
        {"name": "o", "uri": victim["output"], "sizeBytes": 21}]}})
    # The shim reads from its watch cache: wait until it has seen the reported output, then ask.
    wait_for("the shim to see the reported output", lambda: ((a.get(f"/api/v1/jobs/{name}").json().get("status")
                                                             or {}).get("outputs")), timeout=30)
    message = refused(a.get(f"/api/v1/jobs/{name}/outputs/o/url"), 403, "uri_forbidden", "output")
    assert victim["output"] in message
    got = cli(shim_env(a), "outputs", name, "--download", "/tmp/never")
    assert got.returncode != 0 and "outside what tenant" in got.stderr, (got.stdout, got.stderr)
    # ... while A's own objects are still A's to use.
    assert create(mine_in, output(mine_out)).status_code == 201

    assert snapshot(s3, keys) == before


@pytest.fixture
def scope_namespaces(kube: Kube, s3: Any, operator: Any) -> Iterator[dict[str, str]]:
    """tk-scope-a and tk-scope-b (confined by the chart to s3://transkube/<ns>/, plus SHARED_PREFIX read-only) and
    the victim's objects under tk-scope-b; jobs left in tk-scope-a are deleted afterwards."""
    for ns in SCOPE_NAMESPACES:
        create_if_absent(kube, "/api/v1/namespaces",
                         {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    b = f"s3://{BUCKET}/{SCOPE_NAMESPACES[1]}"
    objects = {"input": f"{b}/in.mp4", "output": f"{b}/out.mp4", "logo": f"{b}/logo.png",
               "segment": f"{b}/hls/seg_1.m4s", "stock": f"{SHARED_PREFIX}stock.mp4"}
    for uri in objects.values():
        s3.put_object(Bucket=BUCKET, Key=key_of(uri), Body=f"victim {uri}".encode())
    yield objects
    for item in kube.get(tj_path(SCOPE_NAMESPACES[0]))["items"]:
        kube.delete(tj_path(SCOPE_NAMESPACES[0], item["metadata"]["name"]))


def manifest(ns: str, spec_input: str, *outputs: dict[str, Any], name: str | None = None,
             suspend: bool = True) -> str:
    return json.dumps({"apiVersion": "media.transkube.dev/v1alpha1", "kind": "TranscodeJob",
                       "metadata": {"name": name or f"x-{uuid.uuid4().hex[:6]}", "namespace": ns},
                       "spec": {"suspend": suspend, "input": {"uri": spec_input}, "outputs": list(outputs)}})


def test_kubectl_apply_is_refused_at_admission_naming_the_field(
        kubectl: Callable[..., Any], kube: Kube, s3: Any, scope_namespaces: dict[str, str]) -> None:
    ns, other = SCOPE_NAMESPACES
    victim = scope_namespaces
    keys = [key_of(u) for u in victim.values()]
    before = snapshot(s3, keys)
    mine_in, mine_out = f"s3://{BUCKET}/{ns}/in.mp4", f"s3://{BUCKET}/{ns}/out.mp4"
    attempts = [
        (manifest(ns, victim["input"], output(mine_out)), "spec.input.uri", "read"),
        (manifest(ns, mine_in, output(victim["output"])), "spec.outputs[0].uri", "write"),
        (manifest(ns, mine_in, output(f"s3://{BUCKET}/{other}/hls/")), "spec.outputs[0].uri", "write"),
        (manifest(ns, mine_in, output(mine_out), {**output(victim["output"]), "name": "p"}), "spec.outputs[1].uri",
         "write"),
        (manifest(ns, mine_in, watermarked(mine_out, victim["logo"])), "spec.outputs[0].filters.watermark.uri",
         "read"),
        (manifest(ns, mine_in, output(victim["stock"])), "spec.outputs[0].uri", "write"),  # shared is read-only
    ]
    for trick in (f"s3://{BUCKET}/{ns}-evil/x.mp4", f"s3://{BUCKET}/{ns}/../{other}/out.mp4",
                  f"s3://{BUCKET}/{ns}/%2e%2e/{other}/out.mp4", f"s3://{BUCKET}/{ns}/..%2f{other}/out.mp4",
                  f"s3://{BUCKET}/{other.upper()}/out.mp4"):
        attempts.append((manifest(ns, mine_in, output(trick)), "spec.outputs[0].uri", "write"))
    for body, field, verb in attempts:
        result = kubectl("apply", "-f", "-", input=body, check=False)
        assert result.returncode != 0, body
        assert "(Forbidden)" in result.stderr and f"{field}: " in result.stderr, result.stderr
        assert f"is outside what namespace {ns} may {verb}" in result.stderr, result.stderr
    # The reverse direction, and what each namespace may use: its own prefix, the shared one for reading.
    assert kubectl("apply", "-f", "-", input=manifest(other, mine_in, output(victim["output"])),
                   check=False).returncode != 0
    allowed = kubectl("apply", "--dry-run=server", "-f", "-",
                      input=manifest(ns, victim["stock"], watermarked(mine_out, victim["stock"])), check=False)
    assert allowed.returncode == 0, allowed.stderr
    assert kube.get(tj_path(ns))["items"] == []
    assert snapshot(s3, keys) == before


@pytest.fixture
def policy_audit_only(kube: Kube, kubectl: Callable[..., Any], cluster: ClusterState) -> Iterator[None]:
    """The admission policy stops enforcing (its binding's validationActions: Audit) for one test, as on a cluster
    without it. Not deleted: Kubernetes <= 1.36.1 loses a ConfigMap paramKind once no binding uses it
    (kubernetes#130887). Enforcing again afterwards, checked."""
    kube.merge_patch(BINDING_PATH, {"spec": {"validationActions": ["Audit"]}})
    probe = manifest(SCOPE_NAMESPACES[0], f"s3://{BUCKET}/{SCOPE_NAMESPACES[1]}/in.mp4",
                     output(f"s3://{BUCKET}/{SCOPE_NAMESPACES[0]}/o.mp4"))
    try:
        wait_for("policy in audit mode", lambda: kubectl("apply", "--dry-run=server", "-f", "-", input=probe,
                                                         check=False).returncode == 0, timeout=30)
        yield
    finally:
        kube.merge_patch(BINDING_PATH, {"spec": {"validationActions": ["Deny"]}})
        wait_for("policy enforcing again", lambda: kubectl("apply", "--dry-run=server", "-f", "-", input=probe,
                                                           check=False).returncode != 0, timeout=30)


def test_operator_refuses_what_admission_let_through(
        kubectl: Callable[..., Any], kube: Kube, s3: Any, scope_namespaces: dict[str, str],
        policy_audit_only: None) -> None:
    ns = SCOPE_NAMESPACES[0]
    victim = scope_namespaces
    keys = [key_of(u) for u in victim.values()]
    before = snapshot(s3, keys)
    mine_in, mine_out = f"s3://{BUCKET}/{ns}/in.mp4", f"s3://{BUCKET}/{ns}/out.mp4"
    cases = {  # not suspended: without the re-check the operator would start a worker at once
        "read-other": (manifest(ns, victim["input"], output(mine_out), name="read-other", suspend=False),
                       f"spec.input.uri: {victim['input']} is outside what namespace {ns} may read"),
        "overwrite-other": (manifest(ns, mine_in, output(victim["output"]), name="overwrite-other", suspend=False),
                            f"spec.outputs[0].uri: {victim['output']} is outside what namespace {ns} may write"),
        "mark-other": (manifest(ns, mine_in, watermarked(mine_out, victim["logo"]), name="mark-other",
                                suspend=False),
                       f"spec.outputs[0].filters.watermark.uri: {victim['logo']} is outside what namespace {ns}"),
    }
    for body, _ in cases.values():
        applied = kubectl("apply", "-f", "-", input=body, check=False)
        assert applied.returncode == 0, applied.stderr  # the policy only audits now
    for name, (_, message) in cases.items():
        status = wait_for(f"{name} Failed", lambda n=name: (s := kube.get(tj_path(ns, n)).get("status") or {})
                          .get("phase") == "Failed" and s, timeout=60)
        assert status["reason"] == "UriForbidden" and status["failureCategory"] == "Config", status
        assert status["message"].startswith(message), status["message"]
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "UriForbidden")
        assert "jobName" not in status
        events = wait_for(f"{name} event", lambda n=name: [e for e in kube.get(
            f"/api/v1/namespaces/{ns}/events", fieldSelector=f"involvedObject.name={n}")["items"]
            if e["reason"] == "UriForbidden"])
        assert events[0]["type"] == "Warning" and message in events[0]["message"]
        labels = kube.get(tj_path(ns, name))["metadata"]["labels"]
        assert labels["transkube.dev/failure-category"] == "Config"
    assert kube.get(f"/apis/batch/v1/namespaces/{ns}/jobs")["items"] == []  # no Job, no worker, no write
    assert snapshot(s3, keys) == before
