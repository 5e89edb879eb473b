"""The media-toolbox API: each rule exists once (a Rule table) and is emitted as CEL and enforced by the model
with the same message; defaults and the new output kinds validate as documented."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from transkube_api import crdgen
from transkube_api.models import (
    AUDIO_RULES,
    OUTPUT_RULES,
    STREAMING_RULES,
    TRIM_RULES,
    AudioSpec,
    OutputSpec,
    StreamingSpec,
    TranscodeJobSpec,
    TrimSpec,
)


@pytest.mark.parametrize(("model", "rules"), [
    (OutputSpec, OUTPUT_RULES), (AudioSpec, AUDIO_RULES), (StreamingSpec, STREAMING_RULES), (TrimSpec, TRIM_RULES),
])
def test_every_rule_table_entry_is_a_cel_rule_of_its_model(model: Any, rules: Any) -> None:
    emitted = {(r["rule"], r["message"]) for r in crdgen.model_schema(model)["x-kubernetes-validations"]}
    assert {(r.cel, r.message) for r in rules} <= emitted


def out(**fields: Any) -> dict[str, Any]:
    return {"name": "o", **fields}


VALID = [
    out(uri="s3://bkt/o.mp4", container="mp4"),
    out(uri="s3://bkt/hls/", type="hls"),
    out(uri="s3://bkt/hls/", type="hls", streaming={"renditions": [{"resolution": "720p", "bitrate": "3M"},
                                                                     {"height": 360, "bitrate": "800k"}]}),
    out(uri="s3://bkt/d/", type="dash", streaming={"autoLadder": {"maxRenditions": 2}, "alsoHls": True},
        audio={"codec": "aac", "bitrate": "96k"}),
    out(uri="s3://bkt/t/", type="thumbnails", thumbnails={"times": [1, 2.5]}),
    out(uri="s3://bkt/s/", type="sprite"),
    out(uri="s3://bkt/p.jpg", type="poster"),
    out(uri="s3://bkt/a.m4a", container="m4a", audio={"codec": "aac", "track": 1, "channels": 2, "loudness": {}}),
    out(uri="s3://bkt/a.flac", container="flac"),
    out(uri="s3://bkt/o.mp4", container="mp4", trim={"startSeconds": 1, "durationSeconds": 2},
        filters={"deinterlace": True, "denoise": "light", "aspect": {"ratio": "16:9", "mode": "pad"},
                 "watermark": {"uri": "s3://bkt/logo.png"}}),
]


@pytest.mark.parametrize("spec", VALID)
def test_valid_outputs(spec: dict[str, Any]) -> None:
    OutputSpec.model_validate(spec)


INVALID = [
    (out(uri="s3://bkt/o/", type="hls", container="mp4"), "file outputs need a container"),
    (out(uri="s3://bkt/o.mp4"), "file outputs need a container"),
    (out(uri="s3://bkt/o.m3u8", type="hls"), "take a URI prefix ending in /"),
    (out(uri="s3://bkt/o/", container="mp4"), "take a URI prefix ending in /"),
    (out(uri="s3://bkt/o/", type="sprite", streaming={}), "streaming is only for hls and dash"),
    (out(uri="s3://bkt/o/", type="hls", streaming={"alsoHls": True}), "alsoHls is only for dash"),
    (out(uri="s3://bkt/o/", type="thumbnails"), "thumbnails outputs need thumbnails"),
    (out(uri="s3://bkt/o/", type="thumbnails", thumbnails={"times": [1], "intervalSeconds": 1}), "exactly one of"),
    (out(uri="s3://bkt/o/", type="hls", video={"codec": "h264"}), "video is only for file outputs"),
    (out(uri="s3://bkt/o/", type="hls", audio={"codec": "opus"}), "hls/dash audio is aac or none"),
    (out(uri="s3://bkt/p.jpg", type="poster", trim={"startSeconds": 1}), "trim and filters are only"),
    (out(uri="s3://bkt/a.mp3", container="mp3", filters={"denoise": "light"}), "filters need re-encoded video"),
    (out(uri="s3://bkt/a.mp3", container="mp3", audio={"codec": "none"}), "mp3 cannot carry that audio codec"),
    (out(uri="s3://bkt/a.m4a", container="m4a", video={"codec": "h264"}), "m4a cannot carry that video codec"),
    (out(uri="s3://bkt/o/", type="hls", streaming={"renditions": [{"height": 360, "bitrate": "1M"},
                                                                   {"height": 360, "bitrate": "2M"}]}),
     "rendition sizes must be unique"),
    (out(uri="s3://bkt/o/", type="hls", streaming={"renditions": [{"bitrate": "1M"}]}), "exactly one of resolution"),
    (out(uri="s3://bkt/o.mp4", container="mp4", trim={"startSeconds": 3, "endSeconds": 2}), "must be after"),
    (out(uri="s3://bkt/o.mp4", container="mp4", trim={"endSeconds": 3, "durationSeconds": 2}), "mutually exclusive"),
    (out(uri="s3://bkt/o.mp4", container="mp4", audio={"codec": "copy", "loudness": {}}), "copy/none takes no"),
    (out(uri="s3://bkt/o.mp4", container="mp4", audio={"codec": "none", "track": 1}), "codec none takes no track"),
]


@pytest.mark.parametrize(("spec", "message"), INVALID)
def test_invalid_outputs_fail_with_the_rule_message(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        OutputSpec.model_validate(spec)


def test_prefix_overlap_and_input_under_a_prefix_are_rejected() -> None:
    base = {"input": {"uri": "s3://bkt/in.mp4"}}
    with pytest.raises(ValidationError, match="under another output's URI prefix"):
        TranscodeJobSpec.model_validate({**base, "outputs": [
            out(uri="s3://bkt/pkg/", type="hls"), {**out(uri="s3://bkt/pkg/x.mp4", container="mp4"), "name": "x"}]})
    with pytest.raises(ValidationError, match="cannot overwrite the input"):
        TranscodeJobSpec.model_validate({"input": {"uri": "s3://bkt/pkg/in.mp4"},
                                         "outputs": [out(uri="s3://bkt/pkg/", type="hls")]})
    rules = crdgen.model_schema(TranscodeJobSpec)["properties"]["outputs"]["x-kubernetes-validations"]
    assert any("under another output's URI prefix" in r["message"] for r in rules)


def test_codec_defaults_per_output_type() -> None:
    assert [(o.video_codec, o.audio_codec) for o in map(OutputSpec.model_validate, VALID[:9])] == [
        ("h264", "aac"), ("h264", "aac"), ("h264", "aac"), ("h264", "aac"), ("none", "none"), ("none", "none"),
        ("none", "none"), ("none", "aac"), ("none", "flac")]


def test_existing_file_outputs_wire_unchanged() -> None:
    spec = {"name": "web", "uri": "s3://bkt/o.mp4", "container": "mp4", "video": {"codec": "h264", "crf": 23}}
    wire = OutputSpec.model_validate(spec).wire()
    assert wire == {**spec, "type": "file"}
