"""TranscodePresets without a cluster: the merge rule, what the CRD admits for a preset output, the built-in
presets the chart ships, and the operator's resolution in reconcile.plan()."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from transkube_api import crdgen
from transkube_api.models import OUTPUT_RULES, PRESET_RULES, OutputSpec, TranscodeJobSpec, TranscodePresetSpec
from transkube_api.presets import PresetError, merge, resolve_output
from transkube_operator.config import OperatorConfig
from transkube_operator.reconcile import CreateJob, plan, presets_needed

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 21, 12, 0, 0, tzinfo=dt.UTC)
CFG = OperatorConfig()
WEB: dict[str, Any] = {"description": "web", "type": "file", "container": "mp4",
                       "video": {"codec": "h264", "resolution": "720p", "crf": 23, "preset": "medium"},
                       "audio": {"codec": "aac", "bitrate": "128k", "channels": 2}}
HLS: dict[str, Any] = {"type": "hls", "streaming": {"segmentSeconds": 4, "autoLadder": {"maxRenditions": 3}}}


def out(**extra: Any) -> dict[str, Any]:
    return {"name": "web", "uri": "s3://bkt/out.mp4", "preset": "web-720p", **extra}


# ---- the merge rule -------------------------------------------------------------------------------------------

def test_an_output_with_only_a_preset_gets_every_setting_of_it() -> None:
    resolved = resolve_output(out(), WEB)
    assert resolved["container"] == "mp4" and resolved["video"] == WEB["video"] and resolved["audio"] == WEB["audio"]
    assert "preset" not in resolved and "description" not in resolved
    assert (resolved["name"], resolved["uri"], resolved["type"]) == ("web", "s3://bkt/out.mp4", "file")


def test_objects_merge_key_by_key_and_the_output_wins() -> None:
    resolved = resolve_output(out(video={"codec": "h264", "resolution": "480p"}, audio={"codec": "aac",
                                                                                        "bitrate": "96k"}), WEB)
    assert resolved["video"] == {"codec": "h264", "resolution": "480p", "crf": 23, "preset": "medium"}
    assert resolved["audio"] == {"codec": "aac", "bitrate": "96k", "channels": 2}


def test_one_side_of_an_exclusive_pair_drops_the_other() -> None:
    resolved = resolve_output(out(video={"codec": "h264", "bitrate": "2M", "width": 1280}), WEB)
    assert resolved["video"] == {"codec": "h264", "bitrate": "2M", "width": 1280, "preset": "medium"}
    hls = resolve_output({"name": "h", "uri": "s3://bkt/h/", "preset": "hls",
                          "streaming": {"renditions": [{"resolution": "360p", "bitrate": "800k"}]}}, HLS)
    assert "autoLadder" not in hls["streaming"] and hls["streaming"]["segmentSeconds"] == 4


def test_another_codec_replaces_the_whole_object() -> None:
    resolved = resolve_output(out(container="webm", video={"codec": "vp9", "crf": 33}, audio={"codec": "opus"}), WEB)
    assert resolved["video"] == {"codec": "vp9", "crf": 33}
    assert resolved["audio"] == {"codec": "opus"}


def test_lists_are_replaced_whole() -> None:
    assert merge({"a": {"l": [1, 2]}}, {"a": {"l": [3]}}) == {"a": {"l": [3]}}


def test_the_preset_sets_the_type_and_an_output_cannot_contradict_it() -> None:
    resolved = resolve_output({"name": "h", "uri": "s3://bkt/h/", "preset": "hls", "type": "file"}, HLS)
    assert resolved["type"] == "hls"  # type file is what an unset type reads as (the CRD defaults it)
    with pytest.raises(PresetError, match="output type dash does not match the preset's type hls"):
        resolve_output({"name": "h", "uri": "s3://bkt/h/", "preset": "hls", "type": "dash"}, HLS)


def test_a_merge_that_is_not_a_valid_output_is_refused() -> None:
    with pytest.raises(PresetError, match=r"output web with its preset is not valid: .*hls, dash, thumbnails"):
        resolve_output(out(uri="s3://bkt/dir/"), WEB)  # a file output at a prefix
    with pytest.raises(PresetError, match="webm cannot carry that video codec"):
        resolve_output(out(container="webm"), WEB)  # the preset's h264 in webm
    with pytest.raises(PresetError, match="the preset is not valid"):
        resolve_output(out(), {"type": "file"})  # a preset without container


# ---- what the API admits ----------------------------------------------------------------------------------

def test_an_output_with_only_name_uri_and_preset_is_valid() -> None:
    spec = TranscodeJobSpec.model_validate({"input": {"uri": "s3://bkt/in.mp4"}, "outputs": [
        out(), {"name": "s", "uri": "s3://bkt/sprite/", "preset": "thumbnail-sprite"}]})
    assert [o.preset for o in spec.outputs] == ["web-720p", "thumbnail-sprite"]
    with pytest.raises(ValidationError, match="file outputs need a container"):
        OutputSpec.model_validate({"name": "web", "uri": "s3://bkt/out.mp4"})


def test_type_rules_wait_for_the_preset_and_the_others_do_not() -> None:
    schema = crdgen.model_schema(OutputSpec)
    cel = [r["rule"] for r in schema["x-kubernetes-validations"]]
    assert len(cel) == len(OUTPUT_RULES)
    for rule in cel:
        assert ("self.type" in rule) == rule.startswith("has(self.preset) || (")
    with pytest.raises(ValidationError, match="webm cannot carry that video codec"):
        OutputSpec.model_validate(out(container="webm", video={"codec": "h264"}))
    preset_cel = [r["rule"] for r in crdgen.model_schema(TranscodePresetSpec)["x-kubernetes-validations"]]
    assert len(preset_cel) == len(PRESET_RULES) and not any("self.uri" in r or "preset" in r for r in preset_cel)


def test_preset_crd_names_and_scope() -> None:
    doc = yaml.safe_load(crdgen.render_preset())
    assert doc["metadata"]["name"] == "transcodepresets.media.transkube.dev"
    assert doc["spec"]["scope"] == "Cluster"
    names = doc["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("TranscodePreset", "transcodepresets", ["tp"])
    props = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    # The REST shim reads these three keys at the top level of a preset's spec.
    assert {"container", "video", "audio"} <= set(props)
    assert "name" not in props and "uri" not in props


# ---- the built-in presets -----------------------------------------------------------------------------------

def builtin_presets() -> dict[str, dict[str, Any]]:
    text = (REPO / "charts" / "transkube" / "templates" / "presets.yaml").read_text()
    plain = "\n".join(line for line in text.splitlines() if "{{" not in line)
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(plain) if d}


def test_builtin_presets_are_valid() -> None:
    presets = builtin_presets()
    assert set(presets) == {"web-1080p", "web-720p", "hls-default", "archive-hevc", "thumbnail-sprite"}
    for name, doc in presets.items():
        assert doc["kind"] == "TranscodePreset" and doc["apiVersion"] == "media.transkube.dev/v1alpha1"
        TranscodePresetSpec.model_validate(doc["spec"])
        uri = "s3://bkt/x/" if doc["spec"].get("type", "file") != "file" else "s3://bkt/x.out"
        resolve_output({"name": "o", "uri": uri, "preset": name}, doc["spec"])
    values = (REPO / "charts" / "transkube" / "values.yaml").read_text()
    assert re.search(r"^presets:\n(  .*\n|\s*#.*\n)*  builtin: true", values, re.MULTILINE)


def test_the_preset_example_uses_builtin_presets() -> None:
    doc = yaml.safe_load((REPO / "examples" / "preset.yaml").read_text())
    presets = builtin_presets()
    for o in doc["spec"]["outputs"]:
        resolve_output(o, presets[o["preset"]]["spec"])


# ---- the operator resolves presets once ---------------------------------------------------------------------

def tj(outputs: list[dict[str, Any]], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "movie", "namespace": "media", "uid": "uid-1", "generation": 1,
                         "creationTimestamp": "2026-11-21T11:00:00Z"},
            "spec": {"input": {"uri": "s3://bkt/in.mp4"}, "outputs": outputs}, "status": status or {}}


def preset_obj(spec: dict[str, Any], generation: int = 3) -> dict[str, Any]:
    return {"metadata": {"name": "web-720p", "generation": generation}, "spec": spec}


def worker_spec(action: Any) -> dict[str, Any]:
    env = action.manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    return dict(json.loads(next(e["value"] for e in env if e["name"] == "TRANSKUBE_SPEC")))


def test_presets_needed_until_resolved() -> None:
    assert presets_needed(tj([out(), out(name="b", uri="s3://bkt/b.mp4")])) == ["web-720p"]
    assert presets_needed(tj([out()], {"resolvedOutputs": [{"name": "web"}]})) == []
    assert presets_needed(tj([{"name": "o", "uri": "s3://bkt/o.mp4", "container": "mp4"}])) == []


def test_plan_resolves_presets_into_the_job_and_records_them() -> None:
    p = plan(tj([out(video={"codec": "h264", "crf": 20})]), [], [], CFG, NOW, {"web-720p": preset_obj(WEB)})
    assert p.phase == "Queued"  # a new job waits for admission first
    (action,) = p.actions
    assert isinstance(action, CreateJob)
    (sent,) = worker_spec(action)["outputs"]
    assert "preset" not in sent and sent["container"] == "mp4" and sent["video"]["crf"] == 20
    assert sent["video"]["resolution"] == "720p"
    assert p.status_patch["resolvedOutputs"] == [sent]
    assert p.status_patch["presets"] == [{"output": "web", "preset": "web-720p", "generation": 3}]


def test_recorded_resolution_wins_over_a_later_preset_edit() -> None:
    first = plan(tj([out()]), [], [], CFG, NOW, {"web-720p": preset_obj(WEB)})
    status = {**first.status_patch}
    edited = {**WEB, "video": {"codec": "h264", "resolution": "1080p"}}
    again = plan(tj([out()], status), [], [], CFG, NOW, {"web-720p": preset_obj(edited, 4)})
    assert "resolvedOutputs" not in again.status_patch and "presets" not in again.status_patch
    (action,) = again.actions
    assert isinstance(action, CreateJob)
    assert worker_spec(action)["outputs"][0]["video"]["resolution"] == "720p"


def test_missing_preset_fails_the_job_naming_the_output() -> None:
    p = plan(tj([out()]), [], [], CFG, NOW, {"web-720p": None})
    assert p.phase == "Failed" and not p.actions
    assert p.status_patch["reason"] == "PresetNotFound"
    assert "output web" in p.status_patch["message"] and "web-720p" in p.status_patch["message"]
    assert any(e.reason == "Failed" for e in p.events)


def test_a_merge_that_does_not_validate_fails_as_invalid_preset() -> None:
    p = plan(tj([out(container="webm")]), [], [], CFG, NOW, {"web-720p": preset_obj(WEB)})
    assert p.phase == "Failed" and not p.actions
    assert p.status_patch["reason"] == "InvalidPreset"
    assert "output web" in p.status_patch["message"]


def test_jobs_without_presets_record_nothing() -> None:
    p = plan(tj([{"name": "o", "uri": "s3://bkt/o.mp4", "container": "mp4"}]), [], [], CFG, NOW)
    assert "resolvedOutputs" not in p.status_patch and p.phase == "Queued"
