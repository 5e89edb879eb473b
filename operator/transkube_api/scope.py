"""Storage confinement: which S3 prefixes a namespace's TranscodeJobs, or a shim tenant, may use. Pure.

One decision, taken in three places: the shim (per tenant, 403 uri_forbidden), the operator before it creates a
Job (per namespace, reason UriForbidden) and the API server at admission (per namespace, the
ValidatingAdmissionPolicy whose CEL `admission_policy()` generates from the same constants).

A scope is a list of prefixes (`s3://bucket/` or `s3://bucket/some/path/`): read-write ones (inputs,
watermarks, outputs) and read-only ones (inputs and watermarks only). A URI is inside a prefix when it starts
with it, compared literally and case-sensitively as S3 compares keys; a prefix always ends in `/`, so
`s3://b/tenant-a-evil/x` is not under `s3://b/tenant-a/`. A confined URI may not have a `.` or `..` path
segment, plain or percent-encoded, between `/` or `\\`: S3 would take it literally, but MinIO, proxies and
HTTP stacks may resolve it to a key outside the prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .models import TranscodeJobSpec
from .s3uri import BUCKET_PATTERN, CONTROL_CHARS, SCHEME, S3UriError, parse_s3_uri

Access = Literal["read", "write"]

# The same regex runs in Python (re) and in the admission policy (CEL's matches(), RE2): one or more dots, each
# plain or percent-encoded (also double-encoded: %252e), between separators or the ends of the key.
_SEP = r"(/|\\|%(25)*(2[fF]|5[cC]))"
DOT_SEGMENT_PATTERN = rf"(^|{_SEP})(\.|%(25)*2[eE])+({_SEP}|$)"
_DOT_SEGMENT = re.compile(DOT_SEGMENT_PATTERN)
_PREFIX = re.compile(rf"s3://{BUCKET_PATTERN}/[^{CONTROL_CHARS}]*")

# The placeholder a default scope's prefixes may hold: the namespace (kubectl/GitOps) or the tenant (shim).
NAMESPACE_PLACEHOLDER = "{namespace}"
TENANT_PLACEHOLDER = "{tenant}"


def has_dot_segment(key: str) -> bool:
    return _DOT_SEGMENT.search(key) is not None


def normalize_prefix(text: str) -> str:
    """`s3://bucket`, `s3://bucket/path` or with a trailing `/` -> the prefix ending in `/`. Raises ValueError."""
    prefix = text if text.endswith("/") else text + "/"
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"{text!r} is not an s3://bucket/ or s3://bucket/prefix/ storage prefix")
    if has_dot_segment(prefix[len(SCHEME):].partition("/")[2]):
        raise ValueError(f"{text!r} has a '.' or '..' path segment")
    return prefix


@dataclass(frozen=True)
class StorageScope:
    read_write: tuple[str, ...] = ()
    read_only: tuple[str, ...] = ()

    def prefixes(self, access: Access) -> tuple[str, ...]:
        return self.read_write if access == "write" else self.read_write + self.read_only

    def __or__(self, other: StorageScope) -> StorageScope:
        return StorageScope(tuple(dict.fromkeys(self.read_write + other.read_write)),
                            tuple(dict.fromkeys(self.read_only + other.read_only)))

    def allows(self, uri: str, access: Access) -> bool:
        return refusal(uri, "uri", access, self, "") is None


@dataclass(frozen=True)
class ScopeEntry:
    """One namespace's or tenant's setting as configured: its prefixes (may hold the placeholder), or
    unconfined."""

    unconfined: bool = False
    prefixes: tuple[str, ...] = ()
    read_only_prefixes: tuple[str, ...] = ()

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any] | None, where: str) -> ScopeEntry:
        raw = raw or {}
        unknown = set(raw) - {"unconfined", "prefixes", "readOnlyPrefixes"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} (unconfined, prefixes, readOnlyPrefixes)")
        unconfined = raw.get("unconfined", False)
        if not isinstance(unconfined, bool):  # the admission policy reads only "true" as true
            raise ValueError(f"{where}: unconfined must be true or false, not {unconfined!r}")
        entry = cls(unconfined, tuple(str(p) for p in raw.get("prefixes") or ()),
                    tuple(str(p) for p in raw.get("readOnlyPrefixes") or ()))
        for p in entry.prefixes + entry.read_only_prefixes:  # fail at startup, not on the first job
            try:
                normalize_prefix(p.replace(NAMESPACE_PLACEHOLDER, "x").replace(TENANT_PLACEHOLDER, "x"))
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from exc
        return entry

    def scope(self, placeholder: str, name: str) -> StorageScope:
        def resolve(prefixes: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(normalize_prefix(p.replace(placeholder, name)) for p in prefixes)
        return StorageScope(resolve(self.prefixes), resolve(self.read_only_prefixes))


@dataclass(frozen=True)
class ScopeMap:
    """Names (namespaces, or shim tenants) -> what each may use. An unlisted name gets the default; a listed one
    its own prefixes plus the default's (when the default is confined). `unconfined` lifts confinement: the
    default's for every unlisted name, an entry's for its name."""

    placeholder: str
    default: ScopeEntry = ScopeEntry(unconfined=True)
    entries: Mapping[str, ScopeEntry] = field(default_factory=dict)

    def scope_for(self, name: str) -> StorageScope | None:
        """None: unconfined."""
        entry = self.entries.get(name)
        if entry is None:
            return None if self.default.unconfined else self.default.scope(self.placeholder, name)
        if entry.unconfined:
            return None
        own = entry.scope(self.placeholder, name)
        return own if self.default.unconfined else self.default.scope(self.placeholder, name) | own

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any] | None, placeholder: str, entries_key: str,
                  default: ScopeEntry | None = None) -> ScopeMap:
        """{"default": {...}, "<entries_key>": {name: {...}}}; each entry {unconfined?, prefixes?,
        readOnlyPrefixes?}. A missing "default" is `default` (unconfined if None)."""
        raw = raw or {}
        unknown = set(raw) - {"default", entries_key}
        if unknown:
            raise ValueError(f"storage scope: unknown keys {sorted(unknown)} (default, {entries_key})")
        base = ScopeEntry.from_wire(raw["default"], "default") if "default" in raw \
            else (default or ScopeEntry(unconfined=True))
        entries = {str(k): ScopeEntry.from_wire(v, f"{entries_key}.{k}")
                   for k, v in (raw.get(entries_key) or {}).items()}
        return cls(placeholder, base, entries)


# ---- decisions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    field: str  # e.g. outputs[1].uri, relative to the spec (or to the request)
    uri: str
    message: str  # names the field


def refusal(uri: str, field_name: str, access: Access, scope: StorageScope, who: str) -> Refusal | None:
    """Why `uri` may not be used for `access` under `scope`; None if it may. `who` names the owner of the scope
    in the message (e.g. "namespace team-a")."""
    verb = "write" if access == "write" else "read"
    try:
        loc = parse_s3_uri(uri)
    except S3UriError as exc:
        return Refusal(field_name, uri, f"{field_name}: {exc}")
    if has_dot_segment(loc.key):
        return Refusal(field_name, uri, f"{field_name}: {uri} has a '.' or '..' path segment (also percent-encoded), "
                                        f"which storage servers may resolve; {who} may not use it".strip())
    allowed = scope.prefixes(access)
    if any(uri.startswith(p) for p in allowed):
        return None
    return Refusal(field_name, uri, f"{field_name}: {uri} is outside what {who} may {verb} "
                                    f"({', '.join(allowed) or 'nothing'})")


def spec_uris(spec: TranscodeJobSpec) -> Iterator[tuple[str, str, Access]]:
    """(field, uri, access) of every object a spec names, fields relative to the spec, in document order."""
    yield "input.uri", spec.input.uri, "read"
    for i, o in enumerate(spec.outputs):
        yield f"outputs[{i}].uri", o.uri, "write"
        if o.filters is not None and o.filters.watermark is not None:
            yield f"outputs[{i}].filters.watermark.uri", o.filters.watermark.uri, "read"


def check_spec(spec: TranscodeJobSpec, scope: StorageScope | None, who: str) -> Refusal | None:
    """The first URI of the spec outside `scope` (None: unconfined), or None."""
    if scope is None:
        return None
    for field_name, uri, access in spec_uris(spec):
        if (found := refusal(uri, field_name, access, scope, who)) is not None:
            return found
    return None


# ---- the admission policy (CEL), generated from the same rule ------------------------------------------

# Keys of the policy's parameter ConfigMap (rendered by the chart from storageScope): per listed namespace
# `<ns>.unconfined`, `<ns>.readWrite`, `<ns>.readOnly` (prefixes one per line); the default under `_default.`.
# Namespace names are DNS labels, so neither `_` nor `.` can make one collide with another.
DEFAULT_KEY = "_default"
PARAM_FIELDS = ("unconfined", "readWrite", "readOnly")


def _cel_str(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _cel_ok(uri: str, prefixes: str) -> str:
    return f"({prefixes}.exists(p, {uri}.startsWith(p)) && !{uri}.matches(variables.dotSegment))"


def _cel_lines(kind: str) -> str:
    """The default's and (if listed) the namespace's prefixes of one kind, resolved and normalised."""
    return (f"((variables.defaultOpen ? '' : params.data['{DEFAULT_KEY}.{kind}']) + '\\n' + "
            f"(variables.listed ? params.data[variables.ns + '.{kind}'] : ''))"
            f".split('\\n').filter(p, p != '')"
            f".map(p, p.replace({_cel_str(NAMESPACE_PLACEHOLDER)}, variables.ns))"
            f".map(p, p.endsWith('/') ? p : p + '/')")


def _cel_message(field_expr: str, uri: str, verb: str, prefixes: str) -> str:
    return (f"{field_expr} + ': ' + {uri} + ' is outside what namespace ' + variables.ns + ' may {verb} (' + "
            f"(size({prefixes}) == 0 ? 'nothing' : {prefixes}.join(', ')) + '; no . or .. path segments)'")


def admission_policy(max_outputs: int) -> dict[str, Any]:
    """The ValidatingAdmissionPolicy's spec (the chart adds its name, the binding and the ConfigMap)."""
    indices = "[" + ", ".join(str(i) for i in range(max_outputs)) + "]"
    out = "object.spec.outputs[i]"
    variables = [
        ("ns", "request.namespace"),
        ("dotSegment", _cel_str(DOT_SEGMENT_PATTERN)),
        ("listed", "(variables.ns + '.unconfined') in params.data"),
        ("defaultOpen", f"params.data['{DEFAULT_KEY}.unconfined'] == 'true'"),
        ("unconfined", "variables.listed ? params.data[variables.ns + '.unconfined'] == 'true' : "
                       "variables.defaultOpen"),
        ("writable", f"variables.unconfined ? [] : {_cel_lines('readWrite')}"),
        ("readable", f"variables.unconfined ? [] : variables.writable + {_cel_lines('readOnly')}"),
        ("badOutputs", f"variables.unconfined ? [] : {indices}.filter(i, i < size(object.spec.outputs) && "
                       f"!{_cel_ok(out + '.uri', 'variables.writable')})"),
        ("badWatermarks", f"variables.unconfined ? [] : {indices}.filter(i, i < size(object.spec.outputs) && "
                          f"has({out}.filters) && has({out}.filters.watermark) && "
                          f"!{_cel_ok(out + '.filters.watermark.uri', 'variables.readable')})"),
    ]
    first_out = "object.spec.outputs[variables.badOutputs[0]]"
    first_mark = "object.spec.outputs[variables.badWatermarks[0]]"
    validations = [
        {"expression": f"variables.unconfined || {_cel_ok('object.spec.input.uri', 'variables.readable')}",
         "messageExpression": _cel_message("'spec.input.uri'", "object.spec.input.uri", "read",
                                           "variables.readable"),
         "reason": "Forbidden"},
        {"expression": "size(variables.badOutputs) == 0",
         "messageExpression": _cel_message("'spec.outputs[' + string(variables.badOutputs[0]) + '].uri'",
                                           first_out + ".uri", "write", "variables.writable"),
         "reason": "Forbidden"},
        {"expression": "size(variables.badWatermarks) == 0",
         "messageExpression": _cel_message(
             "'spec.outputs[' + string(variables.badWatermarks[0]) + '].filters.watermark.uri'",
             first_mark + ".filters.watermark.uri", "read", "variables.readable"),
         "reason": "Forbidden"},
    ]
    return {
        "failurePolicy": "Fail",
        "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
        "matchConstraints": {"resourceRules": [{
            "apiGroups": ["media.transkube.dev"], "apiVersions": ["*"], "operations": ["CREATE"],
            "resources": ["transcodejobs"]}]},
        "variables": [{"name": n, "expression": e} for n, e in variables],
        "validations": validations,
    }


def param_data(scopes: ScopeMap) -> dict[str, str]:
    """The parameter ConfigMap's data for a ScopeMap (the chart renders the same from its values; tests and docs
    use this)."""
    def entry(name: str, e: ScopeEntry) -> dict[str, str]:
        return {f"{name}.unconfined": "true" if e.unconfined else "false",
                f"{name}.readWrite": "\n".join(e.prefixes), f"{name}.readOnly": "\n".join(e.read_only_prefixes)}
    data = entry(DEFAULT_KEY, scopes.default)
    for name, e in scopes.entries.items():
        data.update(entry(name, e))
    return data
