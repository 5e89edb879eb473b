"""Quality metrics and gates on the local cluster: PSNR/SSIM (VMAF where ffmpeg has libvmaf) of each measured
output against the source in status.outputs[].metrics (hls/dash: per rendition, in renditions[].metrics), a gate
that fails the job (also on one starved rendition of a ladder), and a gate that re-encodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transkube_dev.kube import ApiError, Kube

from .conftest import tj_path
from .media_fixtures import (
    BUCKET,
    download,
    ffprobe,
    key_of,
    make_media,
    out_prefix,
    results,
    run_job,
    succeeded,
    transcodejob,
    upload,
    video_stream,
)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_media(tmp_path_factory)


def test_metrics_are_present_and_plausible(kube: Kube, tj_namespace: str, s3: Any, media: dict[str, Path],
                                           tmp_path: Path) -> None:
    full, cut = out_prefix() + "full.mp4", out_prefix() + "cut.mp4"
    obj = run_job(kube, tj_namespace, transcodejob("metrics", upload(s3, media["av"]), [
        {"name": "full", "uri": full, "container": "mp4", "video": {"codec": "h264", "crf": 23, "preset": "veryfast"},
         "quality": {"metrics": ["psnr", "ssim", "vmaf"]}},
        # Scaled and trimmed: the reference is cut and scaled the same way, or the numbers would collapse.
        {"name": "cut", "uri": cut, "container": "mp4",
         "video": {"codec": "h264", "crf": 23, "preset": "veryfast", "resolution": "240p"},
         "trim": {"startSeconds": 1.5, "durationSeconds": 3}, "quality": {}},
        {"name": "plain", "uri": out_prefix() + "plain.mp4", "container": "mp4"},
    ]))
    assert obj["status"]["phase"] == "Succeeded", succeeded(obj)()
    out = results(obj)
    for name in ("full", "cut"):
        m = out[name]["metrics"]
        assert m["psnr"] > 30, m
        assert 0.9 < m["ssim"] <= 1, m
        assert "reencoded" not in out[name]
    m = out["full"]["metrics"]
    assert ("vmaf" in m and 0 <= m["vmaf"] <= 100) != ("vmaf" in (m.get("unavailable") or [])), m
    assert "unavailable" not in out["cut"]["metrics"]  # psnr and ssim only, the default
    assert "metrics" not in out["plain"]
    assert video_stream(ffprobe(download(s3, cut, tmp_path / "cut.mp4")))["height"] == 240


def test_a_terrible_encode_fails_the_gate(kube: Kube, tj_namespace: str, s3: Any, media: dict[str, Path]) -> None:
    uri = out_prefix() + "bad.mp4"
    obj = run_job(kube, tj_namespace, transcodejob("terrible", upload(s3, media["av"]), [
        {"name": "bad", "uri": uri, "container": "mp4", "video": {"codec": "h264", "bitrate": "20k"},
         "quality": {"gate": {"metric": "psnr", "min": 30}}}]))
    status = obj["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "QualityBelowThreshold"), status
    assert "output bad: psnr" in status["message"] and "below the gate's min 30" in status["message"]
    assert status["attempts"] == 1  # permanent: never retried (retryLimit 0 here, so also check the class)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=key_of(uri))  # partial output removed


def test_reencode_on_fail_succeeds_at_a_higher_quality(kube: Kube, tj_namespace: str, s3: Any,
                                                       media: dict[str, Path]) -> None:
    # crf 45 measures about 30 dB on this input, the re-encode at crf 39 about 32.7 dB.
    obj = run_job(kube, tj_namespace, transcodejob("reencode", upload(s3, media["av"]), [
        {"name": "low", "uri": out_prefix() + "low.mp4", "container": "mp4",
         "video": {"codec": "h264", "crf": 45, "preset": "veryfast"},
         "quality": {"gate": {"metric": "psnr", "min": 31.5, "onFail": "reencode"}}}]))
    assert obj["status"]["phase"] == "Succeeded", succeeded(obj)()
    low = results(obj)["low"]
    assert low["reencoded"] is True and low["metrics"]["psnr"] >= 31.5, low
    assert obj["status"]["progress"] == {**obj["status"]["progress"], "stage": "Done", "percent": 100}


def test_hls_renditions_are_measured_one_by_one(kube: Kube, tj_namespace: str, s3: Any,
                                               media: dict[str, Path]) -> None:
    obj = run_job(kube, tj_namespace, transcodejob("hls-metrics", upload(s3, media["av"]), [
        {"name": "ladder", "type": "hls", "uri": out_prefix(),
         "streaming": {"renditions": [{"resolution": "360p", "bitrate": "800k"},
                                      {"resolution": "240p", "bitrate": "400k"}]},
         # Trimmed: every rendition's reference is cut (and scaled to the rendition) the same way.
         "trim": {"startSeconds": 1.5, "durationSeconds": 3},
         "quality": {"metrics": ["psnr", "ssim", "vmaf"], "gate": {"metric": "psnr", "min": 30}}}]))
    assert obj["status"]["phase"] == "Succeeded", succeeded(obj)()
    ladder = results(obj)["ladder"]
    assert "metrics" not in ladder and "reencoded" not in ladder  # per rendition only
    assert [(r["height"], r["playlist"]) for r in ladder["renditions"]] == [(360, "stream_360p.m3u8"),
                                                                            (240, "stream_240p.m3u8")]
    for r in ladder["renditions"]:
        m = r["metrics"]
        assert 30 < m["psnr"] < 100 and 0.9 < m["ssim"] <= 1, r
        assert ("vmaf" in m and 0 <= m["vmaf"] <= 100) != ("vmaf" in (m.get("unavailable") or [])), r
    hi, lo = (r["metrics"] for r in ladder["renditions"])
    assert hi["psnr"] > lo["psnr"], ladder  # twice the bitrate at more pixels: measurably better
    assert not any(f.startswith(".quality") for f in ladder["files"])  # the joined renditions are not uploaded


def test_a_starved_rendition_fails_the_gate(kube: Kube, tj_namespace: str, s3: Any, media: dict[str, Path]) -> None:
    prefix = out_prefix()
    obj = run_job(kube, tj_namespace, transcodejob("starved", upload(s3, media["av"]), [
        {"name": "ladder", "type": "hls", "uri": prefix,
         "streaming": {"renditions": [{"resolution": "360p", "bitrate": "800k"},
                                      {"resolution": "240p", "bitrate": "20k"}]},
         "quality": {"gate": {"metric": "psnr", "min": 32}}}]))
    status = obj["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "QualityBelowThreshold"), status
    assert "output ladder rendition 240p: psnr" in status["message"], status
    assert "below the gate's min 32" in status["message"] and "360p" not in status["message"], status
    assert status["attempts"] == 1
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=key_of(prefix))


def test_the_api_server_refuses_quality_where_it_cannot_apply(kube: Kube, tj_namespace: str) -> None:
    for output, message in (
            ({"name": "t", "type": "thumbnails", "uri": out_prefix(), "thumbnails": {"times": [1]}, "quality": {}},
             "quality is only for file outputs with re-encoded video and for hls/dash outputs"),
            ({"name": "h", "type": "hls", "uri": out_prefix(),
              "quality": {"gate": {"metric": "psnr", "min": 30, "onFail": "reencode"}}},
             "quality.gate.onFail reencode is only for file outputs")):
        with pytest.raises(ApiError) as err:
            kube.create(tj_path(tj_namespace), transcodejob("nope", f"s3://{BUCKET}/in.mp4", [output]))
        assert err.value.status == 422 and message in err.value.body, err.value.body
