"""Pure functions: command-line flags and manifests -> a validated TranscodeJob spec, and validation errors ->
messages that name the field."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError
from transkube_api.constants import API_VERSION, KIND
from transkube_api.models import DEFAULT_CODECS, TranscodeJobSpec
from transkube_api.s3uri import S3UriError, parse_s3_uri

from .render import manual_retry, retry_pending

Obj = dict[str, Any]


class SpecError(ValueError):
    """A spec the models reject, or flags that cannot become one; `field` names the offending field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.detail = message


# --output key -> (section, wire field). Section "" is the output itself.
OUTPUT_KEYS: dict[str, tuple[str, str]] = {
    "name": ("", "name"),
    "uri": ("", "uri"),
    "type": ("", "type"),
    "container": ("", "container"),
    "vcodec": ("video", "codec"),
    "width": ("video", "width"),
    "height": ("video", "height"),
    "resolution": ("video", "resolution"),
    "crf": ("video", "crf"),
    "vbitrate": ("video", "bitrate"),
    "bitrate": ("video", "bitrate"),
    "preset": ("video", "preset"),
    "fps": ("video", "fps"),
    "pixel-format": ("video", "pixelFormat"),
    "pix_fmt": ("video", "pixelFormat"),
    "dynamic-range": ("video", "dynamicRange"),
    "acodec": ("audio", "codec"),
    "abitrate": ("audio", "bitrate"),
    "channels": ("audio", "channels"),
    "sample-rate": ("audio", "sampleRate"),
    "track": ("audio", "track"),
}


def parse_output(text: str, index: int = 0) -> Obj:
    """`name=web,uri=s3://b/k.mp4,container=mp4,vcodec=h264,height=720,crf=23` -> one output (wire form).

    Values stay strings; the pydantic models coerce numbers. Video/audio settings without a codec get the
    container's default codec, so `height=720` alone works. `index` only labels errors."""
    where = f"--output #{index + 1}"
    out: Obj = {}
    sections: dict[str, Obj] = {"video": {}, "audio": {}}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not value.strip():
            raise SpecError(f"expected key=value, got {item!r}", where)
        if key not in OUTPUT_KEYS:
            raise SpecError(f"unknown key {key!r}; known: {', '.join(sorted(OUTPUT_KEYS))}", where)
        section, wire = OUTPUT_KEYS[key]
        target = out if not section else sections[section]
        if wire in target:
            raise SpecError(f"{key} given twice", where)
        target[wire] = value.strip()
    container = out.get("container")
    for kind, slot in (("video", 0), ("audio", 1)):
        settings = sections[kind]
        if settings:
            if "codec" not in settings and isinstance(container, str) and container in DEFAULT_CODECS:
                settings["codec"] = DEFAULT_CODECS[container][slot]
            out[kind] = settings
    if "name" not in out and isinstance(out.get("uri"), str):
        out["name"] = default_output_name(out["uri"], index)
    return out


def split_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/some/key -> ("bucket", "some/key"), the key taken literally (transkube_api.s3uri)."""
    try:
        loc = parse_s3_uri(uri)
    except S3UriError as exc:
        raise SpecError(str(exc), "uri") from exc
    return loc.bucket, loc.key


def local_name(key: str, fallback: str = "download") -> str:
    """The file name a downloaded object gets: the key's last segment as it is (spaces, unicode, ...), or
    `fallback` when that is empty, '.' or '..' (which would name a directory, not a new file)."""
    name = key.rsplit("/", 1)[-1]
    return fallback if name in ("", ".", "..") else name


def local_relative(rel: str) -> PurePosixPath:
    """A file of a multi-file output (status.outputs[].files, relative to its prefix) -> where it goes under the
    output's directory; SpecError for a name that would leave it (absolute, '..', empty segments)."""
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts):
        raise SpecError(f"refusing to write {rel!r} outside the output's directory", "files")
    return PurePosixPath(*parts)


def default_output_name(uri: str, index: int = 0) -> str:
    """s3://b/outputs/Web 720p.mp4 -> web-720p (a valid output name), else out-<n>."""
    stem = PurePosixPath(uri.rstrip("/")).stem
    return dns_label(stem) or f"out-{index + 1}"


def dns_label(text: str, limit: int = 63) -> str:
    """Lower-case, [a-z0-9-], no leading/trailing dash, at most `limit` characters ('' if nothing is left)."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    label = re.sub(r"-{2,}", "-", label)[:limit]
    return label.strip("-")


def name_prefix(input_uri: str) -> str:
    """generateName for a job without --name: the input's file stem, `tj-` if none (e.g. `clip-`)."""
    return (dns_label(PurePosixPath(input_uri).stem, 40) or "tj") + "-"


def merge_preset(preset: Mapping[str, Any], output: Mapping[str, Any]) -> Obj:
    """A TranscodePreset's settings ({container, video?, audio?}) under one --output's fields: the output's
    name/uri/container win, its video/audio settings override the preset's field by field."""
    merged: Obj = {k: v for k, v in output.items() if k not in ("video", "audio")}
    merged.setdefault("container", preset.get("container"))
    for kind in ("video", "audio"):
        base = dict(preset.get(kind) or {})
        override = dict(output.get(kind) or {})
        if override.get("codec") and base.get("codec") and override["codec"] != base["codec"]:
            base = {}  # another codec: the preset's settings for its codec may not apply
        base.update(override)
        if base:
            merged[kind] = base
    return {k: v for k, v in merged.items() if v is not None}


def field_path(loc: Sequence[int | str]) -> str:
    """('outputs', 0, 'video', 'crf') -> outputs[0].video.crf (pydantic's validator frames dropped)."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith("function-") or part in ("str", "int", "float", "literal"):
            continue
        else:
            path += f".{part}" if path else part
    return path


def validation_error(exc: ValidationError) -> SpecError:
    """The first problem pydantic found, with the field named as in the manifest."""
    first = exc.errors(include_url=False)[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    return SpecError(message, field_path(first["loc"]) or None)


def validate_spec(raw: Mapping[str, Any]) -> TranscodeJobSpec:
    try:
        return TranscodeJobSpec.model_validate(dict(raw))
    except ValidationError as exc:
        raise validation_error(exc) from exc


@dataclass(frozen=True)
class SubmitRequest:
    """What `submit` will create: the validated spec and where."""

    spec: TranscodeJobSpec
    name: str | None
    namespace: str | None
    generate_name: str | None = None

    def manifest(self) -> Obj:
        meta: Obj = {}
        if self.name:
            meta["name"] = self.name
        else:
            meta["generateName"] = self.generate_name or name_prefix(self.spec.input.uri)
        if self.namespace:
            meta["namespace"] = self.namespace
        return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": self.spec.wire()}


def load_manifest(doc: Any) -> tuple[Obj, str | None, str | None]:
    """A parsed YAML document -> (spec, name, namespace). Accepts a whole TranscodeJob or just its spec."""
    if not isinstance(doc, dict):
        raise SpecError("the manifest must be a mapping (a TranscodeJob, or a TranscodeJob spec)")
    if "kind" in doc or "apiVersion" in doc:
        if doc.get("kind") != KIND or doc.get("apiVersion") != API_VERSION:
            raise SpecError(f"expected apiVersion {API_VERSION}, kind {KIND}; got "
                            f"{doc.get('apiVersion')}, {doc.get('kind')}", "kind")
        meta = doc.get("metadata") or {}
        spec = doc.get("spec")
        if not isinstance(spec, dict):
            raise SpecError("missing", "spec")
        return dict(spec), meta.get("name"), meta.get("namespace")
    return dict(doc), None, None


def build_submit(*, manifest: Any = None, input_uri: str | None = None, outputs: Sequence[str] = (),
                 name: str | None = None, namespace: str | None = None, accelerator: str | None = None,
                 fallback: str | None = None, retry_limit: int | None = None, deadline_seconds: int | None = None,
                 suspend: bool = False, preset: Mapping[str, Any] | None = None, priority: int | None = None,
                 pool: str | None = None) -> SubmitRequest:
    """Flags (and an optional parsed manifest) -> a validated SubmitRequest. Flags win over the manifest:
    --input replaces its input, --output entries are added to its outputs, --name/--namespace replace its
    metadata. With `preset` (a TranscodePreset's settings), every --output is merged over it."""
    spec: Obj = {}
    m_name = m_namespace = None
    if manifest is not None:
        spec, m_name, m_namespace = load_manifest(manifest)
    if input_uri:
        spec["input"] = {**(spec.get("input") or {}), "uri": input_uri}
    if "input" not in spec:
        raise SpecError("required (--input s3://bucket/key or -f manifest.yaml)", "input")
    parsed = [parse_output(text, i + len(spec.get("outputs") or [])) for i, text in enumerate(outputs)]
    if preset is not None:
        parsed = [merge_preset(preset, o) for o in parsed]
    if parsed:
        spec["outputs"] = list(spec.get("outputs") or []) + parsed
    if not spec.get("outputs"):
        raise SpecError("at least one is required (--output name=...,uri=...,container=...)", "outputs")
    if accelerator or fallback:
        acc = dict(spec.get("accelerator") or {})
        if accelerator:
            acc["type"] = accelerator
        if fallback:
            acc["fallback"] = fallback
        spec["accelerator"] = acc
    if retry_limit is not None:
        spec["retryLimit"] = retry_limit
    if deadline_seconds is not None:
        spec["deadlineSeconds"] = deadline_seconds
    if suspend:
        spec["suspend"] = True
    if priority is not None:
        spec["priority"] = priority
    if pool is not None:
        spec["pool"] = pool
    validated = validate_spec(spec)
    final_name = name or m_name
    if final_name is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", final_name):
        raise SpecError("must be a DNS label: lower-case letters, digits and '-'", "metadata.name")
    return SubmitRequest(validated, final_name, namespace or m_namespace)


# ---- manual retry (direct backend; the shim does the same for POST /jobs/{name}/retry) -------------------


def retry_refusal(job: Mapping[str, Any]) -> str | None:
    """Why `retry` cannot raise this job's spec.manualRetry now; None if it can."""
    status = job.get("status") or {}
    if status.get("phase") != "Failed":
        return f"only failed jobs can be retried; this one is {status.get('phase') or 'Queued'}"
    if retry_pending(job):
        return "a retry was already requested and has not started yet"
    return None


def retry_patch(job: Mapping[str, Any]) -> list[Obj]:
    """JSON patch raising spec.manualRetry by one, applied by the API server only if the job is still Failed and
    manualRetry unchanged: of two concurrent retries exactly one counts."""
    current = manual_retry(job)
    return [{"op": "test", "path": "/status/phase", "value": "Failed"},
            {"op": "test", "path": "/spec/manualRetry", "value": current},
            {"op": "replace", "path": "/spec/manualRetry", "value": current + 1}]


def retry_precondition(job: Mapping[str, Any]) -> tuple[Any, int]:
    """What retry_patch tests: a 422 with this unchanged on a fresh read was a real rejection, not a race."""
    return (job.get("status") or {}).get("phase"), manual_retry(job)
