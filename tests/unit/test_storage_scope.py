"""The one S3 URI rule (transkube_api.s3uri) and storage confinement (transkube_api.scope), pure: what every
component accepts, which prefixes a namespace or tenant may use, the generated admission policy and the chart's
parameter ConfigMap, the operator's re-check and the shim's and CLI's use of them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from transkube_api.constants import REASON_URI_FORBIDDEN, failure_category
from transkube_api.crdgen import POLICY_PATH, render_policy
from transkube_api.models import InputSpec, TranscodeJobSpec
from transkube_api.s3uri import S3_URI_PATTERN, S3Location, S3UriError, parse_s3_uri
from transkube_api.scope import (
    DOT_SEGMENT_PATTERN,
    NAMESPACE_PLACEHOLDER,
    TENANT_PLACEHOLDER,
    ScopeMap,
    StorageScope,
    admission_policy,
    check_spec,
    has_dot_segment,
    normalize_prefix,
    param_data,
    refusal,
)
from transkube_cli.spec import SpecError, local_name, local_relative, split_s3_uri
from transkube_operator.config import OperatorConfig
from transkube_operator.reconcile import CreateJob, plan
from transkube_shim import confine, errors, presets
from transkube_shim.config import ShimConfig, parse_storage_scope
from transkube_shim.models import UploadRequest
from transkube_worker.storage import parse_s3_uri as worker_parse

from .test_chart import CHART, helm

# Keys as people name files: every one of these is a valid S3 key, taken literally.
PEOPLE_KEYS = ["My Holiday 2024.mov", "ünïcödé/видео 東京.mp4", "a+b=c&d#e%f?g:h;i@j!k'l(m)n[o]p{q}r~s$t,u.mp4",
               "100%25 literal.mp4", "%2F not a slash.mp4", "  leading and trailing spaces  ", "a//b", "emoji 🎬.mp4",
               "back\\slash.mp4", "x"]


@pytest.mark.parametrize("key", PEOPLE_KEYS)
def test_keys_as_people_name_them_are_taken_literally(key: str) -> None:
    uri = f"s3://media-bucket.1/{key}"
    assert parse_s3_uri(uri) == S3Location("media-bucket.1", key)
    assert re.fullmatch(S3_URI_PATTERN, uri)  # the CRD's pattern (Python re reads it as RE2 does)
    assert InputSpec(uri=uri).uri == uri  # no normalisation, no decoding
    assert worker_parse(uri).key == key and split_s3_uri(uri) == ("media-bucket.1", key)


@pytest.mark.parametrize(("uri", "fragment"), [
    ("s3://bucket/", "the object key is empty"),
    ("s3://bucket", "the object key is empty"),
    ("s3://bucket/a\tb.mp4", "control character (U+0009, character 14 of the URI)"),
    ("s3://bucket/line\nbreak", "control character (U+000A"),
    ("s3://bucket/nul\x00", "U+0000"),
    ("s3://bucket/del\x7f", "U+007F"),
    ("s3://bucket/c1\x85", "U+0085"),
    ("s3://Bucket/key", "is not an S3 bucket name"),
    ("s3://b/key", "is not an S3 bucket name"),
    ("s3://bucket-/key", "is not an S3 bucket name"),
    ("https://bucket/key", "must be s3://bucket/key"),
    ("bucket/key", "must be s3://bucket/key"),
])
def test_control_characters_empty_keys_and_bad_buckets_are_refused(uri: str, fragment: str) -> None:
    with pytest.raises(S3UriError, match=re.escape(fragment)):
        parse_s3_uri(uri)
    assert not re.fullmatch(S3_URI_PATTERN, uri)
    with pytest.raises(ValidationError) as exc:
        TranscodeJobSpec.model_validate({"input": {"uri": "s3://bucket/in.mp4"},
                                         "outputs": [{"name": "o", "uri": uri, "container": "mp4"}]})
    first = exc.value.errors()[0]
    assert first["loc"][:3] == ("outputs", 0, "uri") and fragment in first["msg"]


def test_the_crd_carries_the_rule() -> None:
    crd = yaml.safe_load(Path("crds/transcodejobs.media.transkube.dev.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["input"]["properties"]["uri"]["pattern"] == S3_URI_PATTERN
    assert spec["outputs"]["items"]["properties"]["uri"]["pattern"] == S3_URI_PATTERN
    assert "s3://bucket/key" in spec["input"]["properties"]["uri"]["description"]


@pytest.mark.parametrize(("key", "dots"), [
    ("a/../b", True), ("a/./b", True), ("..", True), ("./x", True), ("a/..", True), ("a/%2e%2e/b", True),
    ("a/%2E./b", True), ("a/%252e%252e/b", True), ("a%2F..%2Fb", True), ("a/..%2fb", True), ("a\\..\\b", True),
    ("a/...", True), ("a/.hidden", False), ("a/b..c", False), ("a/..b", False), ("100%25/x", False),
    ("x.mp4", False),
])
def test_dot_segments_plain_or_encoded(key: str, dots: bool) -> None:
    assert has_dot_segment(key) is dots


def test_prefixes_are_normalised_and_checked() -> None:
    assert normalize_prefix("s3://media") == "s3://media/"
    assert normalize_prefix("s3://media/team a") == "s3://media/team a/"
    for bad in ("s3://M/x", "http://media/", "media/x", "s3://media/a/../b", "s3://media/a\tb"):
        with pytest.raises(ValueError):
            normalize_prefix(bad)


SCOPE = StorageScope(read_write=("s3://media/tenant-a/",), read_only=("s3://stock/",))


@pytest.mark.parametrize(("uri", "access", "allowed"), [
    ("s3://media/tenant-a/in put+1.mp4", "read", True),
    ("s3://media/tenant-a/out/hls/", "write", True),
    ("s3://stock/clip.mp4", "read", True),
    ("s3://stock/clip.mp4", "write", False),  # read-only
    ("s3://media/tenant-a-evil/x.mp4", "read", False),  # the prefix boundary
    ("s3://media/tenant-a", "read", False),
    ("s3://media/Tenant-A/x.mp4", "read", False),  # S3 keys are case-sensitive: another key
    ("s3://media/tenant-b/x.mp4", "read", False),
    ("s3://media/tenant-a/../tenant-b/x.mp4", "write", False),
    ("s3://media/tenant-a/%2e%2e/tenant-b/x.mp4", "write", False),
    ("s3://media/tenant-a/..%2Ftenant-b/x.mp4", "write", False),
    ("s3://media/tenant-a/a\\..\\..\\tenant-b\\x", "write", False),
    ("s3://media-2/tenant-a/x.mp4", "read", False),
    ("s3://other/x", "read", False),
])
def test_scope_decisions(uri: str, access: Any, allowed: bool) -> None:
    assert SCOPE.allows(uri, access) is allowed
    found = refusal(uri, "outputs[0].uri", access, SCOPE, "tenant a")
    assert (found is None) is allowed
    if found is not None:
        assert found.field == "outputs[0].uri" and found.message.startswith("outputs[0].uri: ")


def test_scope_maps_default_listed_unconfined_and_placeholders() -> None:
    unconfined = ScopeMap.from_wire({}, NAMESPACE_PLACEHOLDER, "namespaces")
    assert unconfined.scope_for("anything") is None
    listed = ScopeMap.from_wire({"namespaces": {"team-a": {"prefixes": ["s3://media/team-a"]}}},
                                NAMESPACE_PLACEHOLDER, "namespaces")
    assert listed.scope_for("team-a") == StorageScope(("s3://media/team-a/",))
    assert listed.scope_for("team-b") is None  # the default stays unconfined
    confined = ScopeMap.from_wire({"default": {"prefixes": ["s3://media/{namespace}/"]},
                                   "namespaces": {"team-a": {"readOnlyPrefixes": ["s3://stock"]},
                                                  "admin": {"unconfined": True}}},
                                  NAMESPACE_PLACEHOLDER, "namespaces")
    assert confined.scope_for("team-b") == StorageScope(("s3://media/team-b/",))
    assert confined.scope_for("team-a") == StorageScope(("s3://media/team-a/",), ("s3://stock/",))  # added
    assert confined.scope_for("admin") is None
    with pytest.raises(ValueError, match="unknown keys"):
        ScopeMap.from_wire({"namespace": {}}, NAMESPACE_PLACEHOLDER, "namespaces")
    with pytest.raises(ValueError, match="unconfined must be true or false"):
        ScopeMap.from_wire({"namespaces": {"x": {"unconfined": "yes"}}}, NAMESPACE_PLACEHOLDER, "namespaces")
    with pytest.raises(ValueError, match=r"namespaces\.x"):
        ScopeMap.from_wire({"namespaces": {"x": {"prefixes": ["http://nope"]}}}, NAMESPACE_PLACEHOLDER,
                           "namespaces")


def spec_with(**uris: str) -> TranscodeJobSpec:
    output: dict[str, Any] = {"name": "web", "uri": uris.get("output", "s3://media/tenant-a/o.mp4"),
                              "container": "mp4"}
    if "watermark" in uris:
        output["filters"] = {"watermark": {"uri": uris["watermark"]}}
    return TranscodeJobSpec.model_validate({
        "input": {"uri": uris.get("input", "s3://media/tenant-a/in.mp4")},
        "outputs": [{"name": "thumbs", "type": "thumbnails", "uri": "s3://media/tenant-a/thumbs/",
                     "thumbnails": {"intervalSeconds": 1}}, output]})


def test_check_spec_names_the_first_field_outside() -> None:
    assert check_spec(spec_with(), SCOPE, "tenant a") is None
    assert check_spec(spec_with(input="s3://media/tenant-b/x.mp4"), None, "tenant a") is None  # unconfined
    for kind, uri, field in (("input", "s3://media/tenant-b/in.mp4", "input.uri"),
                             ("output", "s3://stock/o.mp4", "outputs[1].uri"),
                             ("watermark", "s3://media/tenant-b/logo.png", "outputs[1].filters.watermark.uri")):
        found = check_spec(spec_with(**{kind: uri}), SCOPE, "tenant a")
        assert found is not None and found.field == field and uri in found.message, (kind, found)
    assert check_spec(spec_with(watermark="s3://stock/logo.png"), SCOPE, "tenant a") is None  # read-only is ok


# ---- the admission policy and its parameters ----------------------------------------------------------


def test_the_policy_file_is_generated_from_the_rule() -> None:
    assert POLICY_PATH.read_text() == render_policy(), "run `python -m transkube_api.crdgen --write`"
    policy = admission_policy(10)
    names = [v["name"] for v in policy["variables"]]
    assert len(names) == len(set(names))
    everything = json.dumps(policy)
    for used in set(re.findall(r"variables\.([A-Za-z]+)", everything)):
        assert used in names, used
    dots = next(v["expression"] for v in policy["variables"] if v["name"] == "dotSegment")
    # The CEL string literal decodes to the very regex Python uses.
    assert dots[1:-1].replace("\\\\", "\\") == DOT_SEGMENT_PATTERN
    assert "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]" in everything  # spec.outputs' maxItems
    assert {v["reason"] for v in policy["validations"]} == {"Forbidden"}
    assert [v["messageExpression"].split(" + ")[0] for v in policy["validations"]] == [
        "'spec.input.uri'", "'spec.outputs['", "'spec.outputs['"]


def test_the_chart_renders_the_parameters_param_data_describes() -> None:
    values = {"default": {"unconfined": False, "prefixes": ["s3://media/{namespace}/"], "readOnlyPrefixes": []},
              "namespaces": {"team-a": {"prefixes": ["s3://team-a/x/", "s3://team-a/y y"], "readOnlyPrefixes": ["s3://stock/"]},
                             "admin": {"unconfined": True}}}
    out = helm("template", "t", str(CHART), "--show-only", "templates/storage-scope.yaml",
               "--set-json", f"storageScope={json.dumps({'admissionPolicy': True, **values})}").stdout
    config_map = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "ConfigMap")
    expected = param_data(ScopeMap.from_wire(values, NAMESPACE_PLACEHOLDER, "namespaces"))
    assert config_map["data"] == expected
    operator_env = helm("template", "t", str(CHART), "--show-only", "templates/operator-deployment.yaml",
                        "--set-json", f"storageScope={json.dumps({'admissionPolicy': True, **values})}").stdout
    env = {e["name"]: e.get("value") for e in yaml.safe_load(operator_env)["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    assert json.loads(env["TRANSKUBE_STORAGE_SCOPE"]) == values


# ---- the operator's re-check ---------------------------------------------------------------------------


def test_operator_fails_an_out_of_scope_job_before_any_job_exists() -> None:
    cfg = dataclasses.replace(OperatorConfig(), storage_scope=ScopeMap.from_wire(
        {"namespaces": {"media": {"prefixes": ["s3://media/tenant-a/"]}}}, NAMESPACE_PLACEHOLDER, "namespaces"))
    now = dt.datetime(2026, 11, 21, 12, tzinfo=dt.UTC)

    def tj(spec: TranscodeJobSpec) -> dict[str, Any]:
        return {"metadata": {"name": "movie", "namespace": "media", "uid": "u", "generation": 1,
                             "creationTimestamp": "2026-11-21T11:00:00Z"}, "spec": spec.wire(), "status": {}}

    ok = plan(tj(spec_with()), [], [], cfg, now)
    assert any(isinstance(a, CreateJob) for a in ok.actions)
    refused = plan(tj(spec_with(output="s3://media/tenant-b/o.mp4")), [], [], cfg, now)
    assert refused.phase == "Failed" and refused.actions == []
    status = refused.status_patch
    assert status["reason"] == REASON_URI_FORBIDDEN and status["failureCategory"] == "Config"
    assert status["message"].startswith("spec.outputs[1].uri: s3://media/tenant-b/o.mp4 is outside what "
                                        "namespace media may write")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", REASON_URI_FORBIDDEN)
    assert [(e.type, e.reason) for e in refused.events] == [("Warning", REASON_URI_FORBIDDEN)]
    assert failure_category(REASON_URI_FORBIDDEN) == "Config"
    # Another namespace is unconfined (the chart's default).
    other = tj(spec_with(output="s3://media/tenant-b/o.mp4"))
    other["metadata"]["namespace"] = "elsewhere"
    assert any(isinstance(a, CreateJob) for a in plan(other, [], [], cfg, now).actions)


def test_operator_reads_the_mapping_from_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSKUBE_STORAGE_SCOPE", json.dumps(
        {"default": {"unconfined": False, "prefixes": ["s3://media/{namespace}/"], "readOnlyPrefixes": []},
         "namespaces": {}}))
    assert OperatorConfig.from_env().storage_scope.scope_for("x") == StorageScope(("s3://media/x/",))


# ---- the shim ------------------------------------------------------------------------------------------


def test_shim_tenants_get_their_prefix_and_upload_area_by_default() -> None:
    config = ShimConfig(upload_bucket="transkube", upload_prefix="uploads")
    assert confine.tenant_scope(config, "acme") == StorageScope(
        ("s3://transkube/acme/", "s3://transkube/uploads/acme/"))
    configured = dataclasses.replace(config, storage_scope=parse_storage_scope(json.dumps(
        {"tenants": {"acme": {"readOnlyPrefixes": ["s3://stock/"]}, "ops": {"unconfined": True}}}), "transkube"))
    assert confine.tenant_scope(configured, "acme") == StorageScope(
        ("s3://transkube/acme/", "s3://transkube/uploads/acme/"), ("s3://stock/",))
    assert confine.tenant_scope(configured, "ops") is None
    assert ShimConfig.from_env({"TRANSKUBE_SHIM_STORAGE_SCOPE": json.dumps(
        {"default": {"prefixes": ["s3://bkt/{tenant}/"]}})}).scopes().scope_for("t") == StorageScope(("s3://bkt/t/",))
    with pytest.raises(ValueError, match="TRANSKUBE_SHIM_STORAGE_SCOPE"):
        ShimConfig.from_env({"TRANSKUBE_SHIM_STORAGE_SCOPE": '{"tenants": {"x": {"prefixes": ["nope"]}}}'})
    assert TENANT_PLACEHOLDER == "{tenant}"


def test_shim_refusals_are_403_uri_forbidden_naming_the_request_field() -> None:
    config = ShimConfig(upload_bucket="transkube")
    spec = TranscodeJobSpec.model_validate({
        "input": {"uri": "s3://transkube/uploads/acme/f00/in put.mp4"},
        "outputs": [{"name": "a", "uri": "s3://transkube/acme/a.mp4", "container": "mp4"},
                    {"name": "b", "uri": "s3://transkube/acme-evil/b.mp4", "container": "mp4"}]})
    with pytest.raises(errors.ApiError) as exc:
        confine.confine_spec(config, "acme", spec)
    assert (exc.value.status, exc.value.code, exc.value.field) == (403, "uri_forbidden", "outputs[1].uri")
    assert exc.value.message.startswith("outputs[1].uri: s3://transkube/acme-evil/b.mp4 is outside what tenant acme")
    with pytest.raises(errors.ApiError) as exc:
        confine.confine_spec(config, "acme", spec, presets.request_path)
    assert exc.value.field == "outputs[1].uri"  # only outputs[0] is the preset request's output
    # A preset job's fields are the request's.
    assert presets.request_path("outputs[0].uri") == "outputUri"
    assert presets.request_path("outputs[0].filters.watermark.uri") == "overrides.filters.watermark.uri"
    assert presets.request_path("input.uri") == "input.uri"
    with pytest.raises(errors.ApiError) as exc:
        confine.confine_uri(config, "acme", "s3://transkube/beta/o.mp4", "output", "read")
    assert (exc.value.status, exc.value.code, exc.value.field) == (403, "uri_forbidden", "output")


def test_an_admission_policy_denial_reaches_shim_clients_as_403() -> None:
    message = ("transcodejobs.media.transkube.dev \"x\" is forbidden: ValidatingAdmissionPolicy 't-storage-scope' "
               "with binding 't-storage-scope' denied request: spec.outputs[1].uri: s3://m/b/o.mp4 is outside what "
               "namespace a may write (s3://m/a/; no . or .. path segments)")
    err = errors.from_kube_error(403, json.dumps({"message": message, "reason": "Forbidden"}))
    assert (err.status, err.code, err.field) == (403, "uri_forbidden", "outputs[1].uri")
    other = errors.from_kube_error(403, json.dumps({"message": message.split("denied request: ")[0] +
                                                    "denied request: no"}))
    assert (other.status, other.code) == (403, "admission_denied")
    assert errors.from_kube_error(403, json.dumps({"message": "User cannot create"})).status == 502


@pytest.mark.parametrize(("filename", "ok"), [
    ("My Holiday (2024) + friends & #1 50% =.mov", True), ("ünïcödé 東京.mp4", True), ("..", False),
    ("%2e%2e", False), ("a/b.mp4", False), ("a\tb.mp4", False), (".", False), ("...", False)])
def test_upload_file_names_as_people_name_them(filename: str, ok: bool) -> None:
    if ok:
        assert UploadRequest(filename=filename).filename == filename
    else:
        with pytest.raises(ValidationError):
            UploadRequest(filename=filename)


# ---- the CLI -------------------------------------------------------------------------------------------


def test_cli_local_names_keep_the_key_and_never_leave_the_directory() -> None:
    assert local_name("in/My Holiday #1 50%.mov") == "My Holiday #1 50%.mov"
    assert local_name("out/..", "web") == "web" and local_name("out/", "web") == "web"
    assert str(local_relative("stream_720p/seg 1.m4s")) == "stream_720p/seg 1.m4s"
    for bad in ("../x", "a/../../x", "/etc/passwd", "", "a//b"):
        with pytest.raises(SpecError):
            local_relative(bad)
