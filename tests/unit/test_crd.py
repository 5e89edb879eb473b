"""The CRD is generated from the pydantic model; the checked-in copies must not drift, and the rules the
API server enforces (CEL) must agree with the model's own validators."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from transkube_api import crdgen
from transkube_api.models import CONTAINER_CODECS, OutputSpec, TranscodeJobSpec


@pytest.mark.parametrize("path", list(crdgen.rendered()), ids=lambda p: str(p.relative_to(crdgen.REPO)))
def test_checked_in_crd_matches_the_model(path: Any) -> None:
    assert path.exists(), f"{path} is missing: run `python -m transkube_api.crdgen --write`"
    assert path.read_text() == crdgen.rendered()[path], \
        f"{path} drifted: run `python -m transkube_api.crdgen --write`"


def _walk(node: Any, trail: str = "") -> list[str]:
    """Paths of schema properties that lack a description (kubectl explain must read well)."""
    missing = []
    if isinstance(node, dict):
        for name, prop in (node.get("properties") or {}).items():
            here = f"{trail}.{name}"
            if name not in ("apiVersion", "kind", "metadata") and not prop.get("description"):
                missing.append(here)
            missing += _walk(prop, here)
        if "items" in node:
            missing += _walk(node["items"], trail + "[]")
    return missing


@pytest.mark.parametrize("make", [crdgen.crd, crdgen.preset_crd], ids=["transcodejob", "transcodepreset"])
def test_every_field_has_a_description(make: Any) -> None:
    schema = make()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []


@pytest.mark.parametrize("render", [crdgen.render, crdgen.render_preset], ids=["transcodejob", "transcodepreset"])
def test_schema_is_structural(render: Any) -> None:
    text = render()
    for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "title:", "additionalProperties: false", "const:"):
        assert forbidden not in text


def test_names_and_printer_columns() -> None:
    doc = yaml.safe_load(crdgen.render())
    names = doc["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("TranscodeJob", "transcodejobs", ["tj"])
    assert set(names["categories"]) == {"all", "transkube"}
    version = doc["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    cols = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert cols == ["Phase", "Progress", "ETA", "Age"]
    wide = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority")]
    assert "Reason" in wide


def _output(container: str, video: str | None = None, audio: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": "o", "uri": "s3://bkt/o", "container": container}
    if video:
        out["video"] = {"codec": video}
    if audio:
        out["audio"] = {"codec": audio}
    return out


def test_cel_codec_rules_come_from_the_same_table_as_the_validators() -> None:
    schema = crdgen.model_schema(OutputSpec)
    rules = {r["rule"] for r in schema["x-kubernetes-validations"]}
    for container, kinds in CONTAINER_CODECS.items():
        for kind, allowed in kinds.items():
            assert any(f"self.container != '{container}'" in r and f"self.{kind}.codec in" in r and
                       all(f"'{c}'" in r for c in allowed) for r in rules)
            for codec in ("h264", "h265", "vp9", "av1", "aac", "opus", "mp3"):
                is_video = codec in ("h264", "h265", "vp9", "av1")
                if (kind == "video") != is_video:
                    continue
                spec = _output(container, **{kind: codec})
                if codec in allowed:
                    OutputSpec.model_validate(spec)
                else:
                    with pytest.raises(ValidationError, match=f"{container} cannot carry that {kind} codec"):
                        OutputSpec.model_validate(spec)


def test_model_rejects_what_cel_rejects() -> None:
    base = {"input": {"uri": "s3://bkt/in.mp4"}}
    with pytest.raises(ValidationError, match="crf and bitrate are mutually exclusive"):
        TranscodeJobSpec.model_validate({**base, "outputs": [
            {**_output("mp4"), "video": {"codec": "h264", "crf": 20, "bitrate": "2M"}}]})
    with pytest.raises(ValidationError, match="resolution and width/height are mutually exclusive"):
        TranscodeJobSpec.model_validate({**base, "outputs": [
            {**_output("mp4"), "video": {"codec": "h264", "resolution": "720p", "width": 1280}}]})
    with pytest.raises(ValidationError, match="output URIs must be unique"):
        TranscodeJobSpec.model_validate({**base, "outputs": [_output("mp4"), {**_output("mkv"), "name": "p"}]})
    with pytest.raises(ValidationError, match="an output needs video or audio"):
        TranscodeJobSpec.model_validate({**base, "outputs": [_output("mp4", "none", "none")]})


def test_defaults_match_between_model_and_schema() -> None:
    spec = TranscodeJobSpec.model_validate({"input": {"uri": "s3://bkt/in.mp4"}, "outputs": [_output("mp4")]})
    schema = crdgen.model_schema(TranscodeJobSpec)["properties"]
    assert schema["retryLimit"]["default"] == spec.retry_limit
    assert schema["suspend"]["default"] is spec.suspend is False
    accel = schema["accelerator"]["properties"]
    assert accel["type"]["default"] == spec.accelerator.type
    assert accel["fallbackAfterSeconds"]["default"] == spec.accelerator.fallback_after_seconds
