"""TranscodePresets on the local cluster: the chart's built-ins, resolution by the operator pod, write-once
status.resolvedOutputs, PresetNotFound. (examples/preset.yaml runs in test_media_examples.py like every example.)"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from transkube_dev.kube import ApiError, Kube

from .conftest import InstalledOperator, tj_path, wait_for
from .media_fixtures import (
    download,
    ffprobe,
    make_media,
    out_prefix,
    results,
    run_job,
    succeeded,
    transcodejob,
    upload,
    video_stream,
)

PRESETS = "/apis/media.transkube.dev/v1alpha1/transcodepresets"
BUILTIN = {"web-1080p", "web-720p", "hls-default", "archive-hevc", "thumbnail-sprite"}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_media(tmp_path_factory)


@pytest.fixture
def own_preset(kube: Kube, operator: InstalledOperator) -> Any:
    """A preset of this test's own (copied from web-720p, at 360p for speed), deleted after."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    spec = dict(kube.get(f"{PRESETS}/web-720p")["spec"])
    spec["video"] = {**spec["video"], "resolution": "360p", "preset": "veryfast"}
    kube.create(PRESETS, {"apiVersion": "media.transkube.dev/v1alpha1", "kind": "TranscodePreset",
                          "metadata": {"name": name}, "spec": spec})
    yield name
    try:
        kube.delete(f"{PRESETS}/{name}")
    except ApiError as e:
        if e.status != 404:
            raise


def test_builtin_presets_are_installed(kube: Kube, operator: InstalledOperator) -> None:
    items = {p["metadata"]["name"]: p for p in kube.get(PRESETS)["items"]}
    assert set(items) >= BUILTIN
    assert items["web-720p"]["spec"]["container"] == "mp4"
    assert items["hls-default"]["spec"]["type"] == "hls"
    assert items["web-720p"]["metadata"]["labels"]["app.kubernetes.io/name"] == "transkube"


def test_the_api_server_validates_presets(kube: Kube, operator: InstalledOperator) -> None:
    with pytest.raises(ApiError) as err:
        kube.create(PRESETS, {"apiVersion": "media.transkube.dev/v1alpha1", "kind": "TranscodePreset",
                              "metadata": {"name": f"bad-{uuid.uuid4().hex[:8]}"},
                              "spec": {"container": "webm", "video": {"codec": "h264"}}})
    assert err.value.status == 422 and "webm cannot carry that video codec" in err.value.body


def test_job_with_builtin_preset_succeeds_and_records_the_resolved_settings(
        kube: Kube, tj_namespace: str, s3: Any, media: dict[str, Path], tmp_path: Path) -> None:
    uri = out_prefix() + "web.mp4"
    obj = run_job(kube, tj_namespace, transcodejob("web", upload(s3, media["av"]), [
        {"name": "web", "uri": uri, "preset": "web-720p"}]))
    assert obj["status"]["phase"] == "Succeeded", succeeded(obj)()
    (resolved,) = obj["status"]["resolvedOutputs"]
    assert resolved["container"] == "mp4" and resolved["uri"] == uri and "preset" not in resolved
    assert resolved["video"] == {"codec": "h264", "resolution": "720p", "crf": 23, "preset": "medium",
                                 "pixelFormat": "yuv420p"}
    assert obj["status"]["presets"][0]["output"] == "web" and obj["status"]["presets"][0]["preset"] == "web-720p"
    assert obj["spec"]["outputs"][0] == {"name": "web", "uri": uri, "preset": "web-720p", "type": "file"}
    v = video_stream(ffprobe(download(s3, uri, tmp_path / "web.mp4")))
    assert (v["codec_name"], v["height"]) == ("h264", 720)
    assert results(obj)["web"]["height"] == 720


def test_editing_the_preset_later_changes_no_job(kube: Kube, tj_namespace: str, s3: Any, media: dict[str, Path],
                                                 own_preset: str, tmp_path: Path) -> None:
    uri = out_prefix() + "web.mp4"
    body = transcodejob("edited", upload(s3, media["av"]), [
        {"name": "web", "uri": uri, "preset": own_preset, "audio": {"codec": "aac", "bitrate": "96k"}}])
    body["spec"]["suspend"] = True  # resolved (Job created, suspended) before the preset changes
    kube.create(tj_path(tj_namespace), body)
    status = wait_for("resolved and suspended", lambda: (lambda st: st if st.get("phase") == "Suspended" and
                      st.get("resolvedOutputs") else None)(kube.get(tj_path(tj_namespace, "edited")).get("status")
                                                           or {}))
    before = status["resolvedOutputs"]
    assert before[0]["video"]["resolution"] == "360p"
    assert before[0]["audio"] == {"codec": "aac", "bitrate": "96k", "channels": 2}  # merged: the output wins
    generation = status["presets"][0]["generation"]

    edited = kube.merge_patch(f"{PRESETS}/{own_preset}", {"spec": {"video": {"resolution": "1080p"}}})
    assert edited["metadata"]["generation"] == generation + 1
    kube.merge_patch(tj_path(tj_namespace, "edited"), {"spec": {"suspend": False}})
    wait_for("edited finished", lambda: (kube.get(tj_path(tj_namespace, "edited")).get("status") or {}).get(
        "phase") in ("Succeeded", "Failed"), timeout=300)
    obj = kube.get(tj_path(tj_namespace, "edited"))
    assert obj["status"]["phase"] == "Succeeded", succeeded(obj)()
    assert obj["status"]["resolvedOutputs"] == before and obj["status"]["presets"][0]["generation"] == generation
    assert video_stream(ffprobe(download(s3, uri, tmp_path / "web.mp4")))["height"] == 360
    # And nobody may rewrite it: the API server refuses (a transition rule on status).
    with pytest.raises(ApiError) as err:
        kube.merge_patch(tj_path(tj_namespace, "edited") + "/status",
                         {"status": {"resolvedOutputs": [{**before[0], "container": "mkv"}]}})
    assert err.value.status == 422 and "written once" in err.value.body


def test_missing_preset_fails_with_preset_not_found(kube: Kube, tj_namespace: str, s3: Any,
                                                    media: dict[str, Path]) -> None:
    obj = run_job(kube, tj_namespace, transcodejob("missing", upload(s3, media["av"]), [
        {"name": "ok", "uri": out_prefix() + "ok.mp4", "container": "mp4"},
        {"name": "web", "uri": out_prefix() + "web.mp4", "preset": "no-such-preset"}]))
    status = obj["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "PresetNotFound")
    assert "output web" in status["message"] and "no-such-preset" in status["message"]
    assert not status.get("jobName") and "resolvedOutputs" not in status
    jobs = kube.get(f"/apis/batch/v1/namespaces/{tj_namespace}/jobs")["items"]
    assert jobs == []


def test_a_preset_merge_that_is_not_valid_fails_with_invalid_preset(kube: Kube, tj_namespace: str, s3: Any,
                                                                    media: dict[str, Path]) -> None:
    obj = run_job(kube, tj_namespace, transcodejob("invalid", upload(s3, media["av"]), [
        {"name": "web", "uri": out_prefix() + "web.webm", "preset": "web-720p", "container": "webm"}]))
    status = obj["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "InvalidPreset"), status
    assert "output web" in status["message"] and "webm cannot carry" in status["message"]
