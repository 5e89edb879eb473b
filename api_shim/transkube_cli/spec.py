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
from transkube_api.models import DEFAULT_CODECS, NAME_PATTERN, PREFIX_TYPES, TranscodeJobSpec
from transkube_api.presets import PresetError, resolve_output
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
    container's default codec, so `height=720` alone works. A missing name or URI is filled in later
    (fill_defaults), when all outputs and the input are known. `index` only labels errors."""
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


# ---- defaults: an output's name and URI when none is given (docs/cli.md, "Defaults") ---------------------

IMAGE_EXTENSIONS = {"jpeg": "jpg"}  # poster format -> file extension, where they differ


def unique_name(base: str, taken: set[str]) -> str:
    """`base`, else `base-2`, `base-3`, ... (kept within the 63 characters of an output name)."""
    if base not in taken:
        return base
    n = 2
    while True:
        suffix = f"-{n}"
        candidate = base[:63 - len(suffix)].rstrip("-") + suffix
        if candidate not in taken:
            return candidate
        n += 1


def effective(output: Mapping[str, Any], preset: Mapping[str, Any] | None, key: str) -> Any:
    """An output's own setting, else its preset's (only for choosing defaults: the operator merges for real)."""
    own = output.get(key)
    return own if own is not None or preset is None else preset.get(key)


def output_type(output: Mapping[str, Any], preset: Mapping[str, Any] | None) -> str:
    """The type the output will have: a preset's type wins over an unset or `file` own type (presets.py)."""
    own = str(output.get("type") or "file")
    if preset is not None and own == "file":
        return str(preset.get("type") or "file")
    return own


def output_label(output: Mapping[str, Any], preset: Mapping[str, Any] | None, index: int) -> str:
    """A name for an output that has neither name nor URI: its preset's name, else what it is, e.g.
    `mp4-720p`, `webm`, `hls`, `poster`."""
    if isinstance(output.get("preset"), str):
        return dns_label(output["preset"]) or f"out-{index + 1}"
    kind = output_type(output, preset)
    container = effective(output, preset, "container")
    head = str(container) if kind == "file" and container else kind
    video = output.get("video") or {}
    size = video.get("resolution") or (f"{video['height']}p" if video.get("height") else "") or \
        (f"w{video['width']}" if video.get("width") else "")
    return dns_label(f"{head}-{size}" if size else head) or f"out-{index + 1}"


def extension(output: Mapping[str, Any], preset: Mapping[str, Any] | None) -> str | None:
    """The file extension of a file/poster output (its container, or its image format); None if unknown."""
    if output_type(output, preset) == "poster":
        poster = effective(output, preset, "poster") or {}
        fmt = str(poster.get("format") or "jpeg")
        return IMAGE_EXTENSIONS.get(fmt, fmt)
    container = effective(output, preset, "container")
    return str(container) if container else None


def split_key(key: str) -> tuple[str, str]:
    """`a/b/My Clip.final.mov` -> (`a/b/`, `My Clip.final`): the "directory" (with its /) and the file stem,
    taken literally (no path normalisation: an S3 key is not a path)."""
    directory, _, filename = key.rpartition("/")
    stem = filename.rsplit(".", 1)[0] if "." in filename[1:] else filename
    return (directory + "/" if directory else ""), stem


def default_uri(input_uri: str, name: str, prefix: bool, ext: str | None) -> str:
    """Next to the input: s3://b/dir/clip.mp4 + web -> s3://b/dir/clip-web.mp4 (file outputs), or
    s3://b/dir/clip-web/ (hls, dash, thumbnails, sprite)."""
    bucket, key = split_s3_uri(input_uri)
    directory, stem = split_key(key)
    base = f"s3://{bucket}/{directory}{stem}-{name}"
    return base + "/" if prefix else f"{base}.{ext}"


def _clashes(uri: str, taken: set[str]) -> bool:
    """Same URI as the input or another output, or one of them under it (or it under one of them)."""
    return any(uri == t or (uri.endswith("/") and t.startswith(uri)) or (t.endswith("/") and uri.startswith(t))
               for t in taken)


def fill_defaults(outputs: Sequence[Mapping[str, Any]], input_uri: str,
                  presets: Mapping[str, Mapping[str, Any]]) -> list[Obj]:
    """Every output with a name and a URI. A missing name: the URI's file name (`web-720p`), else the preset's
    name, else what the output is (`mp4-720p`); made unique with `-2`, `-3`. A missing URI: next to the input,
    `<input stem>-<name>.<ext>` for file/poster outputs, `<input stem>-<name>/` for prefix outputs; never the
    input, another output, or under/over a prefix output (a clash takes the next `-2`, `-3` suffix). `presets`
    (name -> spec) tell the type and container of outputs that name a preset."""
    names = {str(o["name"]) for o in outputs if isinstance(o.get("name"), str)}
    uris = {str(o["uri"]) for o in outputs if isinstance(o.get("uri"), str)} | {input_uri}
    try:
        split_s3_uri(input_uri)
        input_ok = True
    except SpecError:
        input_ok = False  # validation names input.uri; no URI can be derived from it
    filled: list[Obj] = []
    for i, output in enumerate(outputs):
        out = dict(output)
        preset_name = out.get("preset")
        preset = presets.get(preset_name) if isinstance(preset_name, str) else None
        if "name" not in out:
            uri = out.get("uri")
            base = default_output_name(uri, i) if isinstance(uri, str) else output_label(out, preset, i)
            out["name"] = unique_name(base, names)
            names.add(out["name"])
        if "uri" not in out and input_ok and re.fullmatch(NAME_PATTERN, str(out["name"])):  # else: name is refused
            if isinstance(preset_name, str) and preset is None:
                raise SpecError(f"required: the URI of an output with preset {preset_name!r} (not read here)",
                                f"outputs[{i}].uri")
            prefix = output_type(out, preset) in PREFIX_TYPES
            ext = None if prefix else extension(out, preset)
            if not prefix and not ext:
                raise SpecError("required for a file output (it also names the default URI's extension): "
                                "container=mp4, webm, ...", f"outputs[{i}].container")
            label, n = str(out["name"]), 1
            uri = default_uri(input_uri, label, prefix, ext)
            while _clashes(uri, uris):
                n += 1
                uri = default_uri(input_uri, f"{label}-{n}", prefix, ext)
            out["uri"] = uri
            uris.add(uri)
        filled.append(out)
    return filled


def with_preset(output: Mapping[str, Any], name: str, preset: Mapping[str, Any]) -> Obj:
    """One --output naming a preset (sent as `preset: <name>`; the operator merges it, by the one rule in
    transkube_api.presets, and records the result in status.resolvedOutputs). Video/audio settings without a
    codec take the preset's codec, so `crf=26` overrides the preset's crf field by field instead of replacing
    its whole video object."""
    out: Obj = {**output, "preset": name}
    container = out.get("container") or preset.get("container")
    for kind, slot in (("video", 0), ("audio", 1)):
        settings = out.get(kind)
        if isinstance(settings, dict) and "codec" not in settings:
            base = preset.get(kind) or {}
            codec = base.get("codec") or (DEFAULT_CODECS[container][slot] if container in DEFAULT_CODECS else None)
            if codec:
                out[kind] = {"codec": codec, **settings}
    return out


def preset_names(manifest: Any, preset: str | None) -> list[str]:
    """The presets `submit` must read: --preset, and those the manifest's outputs name."""
    names = [preset] if preset else []
    if manifest is not None:
        spec = load_manifest(manifest)[0]
        for out in spec.get("outputs") or []:
            if isinstance(out, dict) and isinstance(out.get("preset"), str):
                names.append(out["preset"])
    return list(dict.fromkeys(names))


def check_presets(spec: TranscodeJobSpec, presets: Mapping[str, Mapping[str, Any]]) -> None:
    """Each output that names a preset, merged with it by the operator's rule, must be a valid output: the same
    check the operator (and the shim) make, done before anything is created."""
    for i, out in enumerate(spec.wire()["outputs"]):
        preset = presets.get(out.get("preset") or "")
        if preset is None:
            continue
        try:
            resolve_output(out, dict(preset))
        except PresetError as exc:
            raise SpecError(str(exc), f"outputs[{i}]") from exc


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
                 suspend: bool = False, preset: str | None = None,
                 presets: Mapping[str, Mapping[str, Any]] | None = None, priority: int | None = None,
                 pool: str | None = None) -> SubmitRequest:
    """Flags (and an optional parsed manifest) -> a validated SubmitRequest. Flags win over the manifest:
    --input replaces its input, --output entries are added to its outputs, --name/--namespace replace its
    metadata. With `preset` (a TranscodePreset's name), every --output names it (one output if none is given).
    `presets` (name -> spec, read from the backend) check those merges before anything is sent, and tell the
    type of preset outputs whose URI is defaulted. Missing output names and URIs get defaults (fill_defaults)."""
    spec: Obj = {}
    m_name = m_namespace = None
    known = dict(presets or {})
    if manifest is not None:
        spec, m_name, m_namespace = load_manifest(manifest)
    if input_uri:
        spec["input"] = {**(spec.get("input") or {}), "uri": input_uri}
    if "input" not in spec:
        raise SpecError("required (--input s3://bucket/key or -f manifest.yaml)", "input")
    parsed = [parse_output(text, i + len(spec.get("outputs") or [])) for i, text in enumerate(outputs)]
    if preset is not None:
        if preset not in known:
            raise SpecError(f"preset {preset!r} was not read", "preset")
        parsed = [with_preset(o, preset, known[preset]) for o in parsed or [{}]]
    if parsed:
        spec["outputs"] = list(spec.get("outputs") or []) + parsed
    if not spec.get("outputs"):
        raise SpecError("at least one is required (--output container=mp4,height=720, or --preset NAME)", "outputs")
    uri = (spec.get("input") or {}).get("uri") if isinstance(spec.get("input"), dict) else None
    if isinstance(uri, str) and all(isinstance(o, dict) for o in spec["outputs"]):
        spec["outputs"] = fill_defaults(spec["outputs"], uri, known)
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
    check_presets(validated, known)
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
