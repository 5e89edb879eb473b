"""The REST shim's preset endpoints against the real cluster with the chart installed (so the built-in
TranscodePresets exist): the list is typed by the CRD's own model, and a preset job is an ordinary TranscodeJob
whose output names the preset, resolved by the operator (status.resolvedOutputs) and run end to end."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transkube_api.models import TranscodePresetSpec
from transkube_dev.kube import Kube

from .conftest import InstalledOperator, tj_path, wait_for
from .shim_fixtures import *  # noqa: F403 (fixtures)
from .shim_fixtures import BUCKET, Tenant

pytestmark = pytest.mark.integration
PRESETS = "/apis/media.transkube.dev/v1alpha1/transcodepresets"
BUILTIN_TYPES = {"web-1080p": "file", "web-720p": "file", "hls-default": "hls", "archive-hevc": "file",
                 "thumbnail-sprite": "sprite"}


def upload(s3: Any, t: Tenant, path: Path) -> str:
    key = f"{t.name}/inputs/{uuid.uuid4().hex}/{path.name}"
    s3.upload_file(str(path), BUCKET, key)
    return f"s3://{BUCKET}/{key}"


def out(t: Tenant, name: str) -> str:
    """Under the tenant's own prefix: the shim confines each tenant to it."""
    return t.uri(f"outputs/{uuid.uuid4().hex}/{name}")


def assert_error(resp: Any, status: int, code: str, field: str | None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["code"] == code and error.get("field") == field, error
    return error


def job_names(kube: Kube, namespace: str) -> set[str]:
    return {o["metadata"]["name"] for o in kube.get(tj_path(namespace))["items"]}


def test_list_has_every_builtin_with_its_full_spec(tenant: Callable[..., Tenant], kube: Kube,
                                                   operator: InstalledOperator) -> None:
    resp = tenant().get("/api/v1/presets")
    assert resp.status_code == 200, resp.text
    items = {p["name"]: p for p in resp.json()["items"]}
    assert set(items) >= set(BUILTIN_TYPES)
    for name, kind in BUILTIN_TYPES.items():
        spec = items[name]["spec"]
        assert spec["type"] == kind and spec["description"], (name, spec)
        stored = kube.get(f"{PRESETS}/{name}")["spec"]
        assert spec == TranscodePresetSpec.model_validate(stored).wire(), name
    assert "container" not in items["hls-default"]["spec"] and items["hls-default"]["spec"]["streaming"]
    assert "container" not in items["thumbnail-sprite"]["spec"] and items["thumbnail-sprite"]["spec"]["sprite"]
    assert items["archive-hevc"]["spec"]["container"] == "mkv"


def test_preset_job_with_an_override_runs_and_records_the_resolved_output(
        tenant: Callable[..., Tenant], kube: Kube, s3: Any, media_files: dict[str, Path]) -> None:
    t = tenant()
    uri = out(t, "web.mp4")
    created = t.post("/api/v1/presets/web-720p/jobs", json={
        "input": {"uri": upload(s3, t, media_files["short"])}, "outputUri": uri, "outputName": "web",
        "overrides": {"video": {"codec": "h264", "crf": 30, "preset": "ultrafast"}}, "retryLimit": 0})
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["spec"]["outputs"][0]["preset"] == "web-720p"
    assert "container" not in job["spec"]["outputs"][0]
    name = job["name"]
    wait_for("preset job finished", lambda: t.get(f"/api/v1/jobs/{name}").json()["status"].get("phase")
             in ("Succeeded", "Failed"), timeout=240)
    cr = kube.get(tj_path(t.namespace, name))
    status = cr["status"]
    assert status["phase"] == "Succeeded", status
    (resolved,) = status["resolvedOutputs"]
    assert resolved["name"] == "web" and resolved["uri"] == uri and resolved["container"] == "mp4"
    assert "preset" not in resolved
    assert resolved["video"] == {"codec": "h264", "resolution": "720p", "crf": 30, "preset": "ultrafast",
                                 "pixelFormat": "yuv420p"}
    assert resolved["audio"]["bitrate"] == "128k"
    assert status["presets"][0]["output"] == "web" and status["presets"][0]["preset"] == "web-720p"
    assert cr["spec"]["outputs"][0]["preset"] == "web-720p"
    shown = t.get(f"/api/v1/jobs/{name}").json()["status"]
    assert shown["resolvedOutputs"] == status["resolvedOutputs"] and shown["presets"] == status["presets"]
    assert status["outputs"][0]["height"] == 720


def test_preset_job_for_a_preset_without_a_container(tenant: Callable[..., Tenant], kube: Kube, s3: Any,
                                                     media_files: dict[str, Path]) -> None:
    t = tenant()
    created = t.post("/api/v1/presets/thumbnail-sprite/jobs", json={
        "input": {"uri": upload(s3, t, media_files["short"])}, "outputUri": out(t, "sprite/"),
        "overrides": {"sprite": {"intervalSeconds": 1}}})
    assert created.status_code == 201, created.text
    name = created.json()["name"]
    resolved = wait_for("resolvedOutputs", lambda: (kube.get(tj_path(t.namespace, name)).get("status") or {})
                        .get("resolvedOutputs"), timeout=60)
    assert resolved[0]["type"] == "sprite" and resolved[0]["sprite"]["intervalSeconds"] == 1
    assert resolved[0]["sprite"]["columns"] == 10


def test_unknown_preset_and_invalid_overrides_are_422_before_anything_is_created(
        tenant: Callable[..., Tenant], kube: Kube, operator: InstalledOperator) -> None:
    t = tenant()
    before = job_names(kube, t.namespace)
    body: dict[str, Any] = {"input": {"uri": t.uri("in.mp4")}, "outputUri": out(t, "o.mp4")}
    assert_error(t.post(f"/api/v1/presets/no-such-{uuid.uuid4().hex[:6]}/jobs", json=body), 422,
                 "preset_not_found", "preset")
    # mp4's h264 from the preset cannot go into webm: only the merge shows it.
    error = assert_error(t.post("/api/v1/presets/web-720p/jobs", json={**body, "overrides": {"container": "webm"}}),
                         422, "validation_error", "overrides.video.codec")
    assert "webm cannot carry that video codec" in error["message"]
    assert_error(t.post("/api/v1/presets/web-720p/jobs", json={**body, "overrides": {"type": "hls"}}),
                 422, "validation_error", "overrides.type")
    assert_error(t.post("/api/v1/presets/hls-default/jobs", json=body), 422, "validation_error", "outputUri")
    assert_error(t.post("/api/v1/presets/web-720p/jobs", json={
        **body, "overrides": {"video": {"codec": "h264", "crf": "high"}}}), 422, "validation_error",
        "overrides.video.crf")
    assert job_names(kube, t.namespace) == before
