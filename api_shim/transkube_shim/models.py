"""The shim's request and response bodies. Job specs and statuses ARE the TranscodeJob models from
transkube_api (the CRD is generated from them too); these only wrap them. The OpenAPI document is generated
from this module."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field
from transkube_api.models import (
    NAME_PATTERN,
    AcceleratorSpec,
    ApiModel,
    FailureCategory,
    InputSpec,
    OutputSettings,
    ResourcesSpec,
    TranscodeJobSpec,
    TranscodeJobStatus,
    TranscodePresetSpec,
    WebhookSpec,
)
from transkube_api.s3uri import CONTROL_CHARS, S3Uri
from transkube_api.scope import has_dot_segment

StatusFilter = Literal["queued", "pending", "running", "suspended", "succeeded", "failed", "cancelled"]


class WebhookSummary(ApiModel):
    """One webhook subscription at a glance, from status.webhooks and status.webhookDeliveries."""

    name: str = Field(description="spec.webhooks[].name.")
    disabled: bool = Field(default=False, description="True once deliveries stopped (the receiver answered 410).")
    disabled_reason: str | None = Field(default=None, description="Why deliveries stopped.")
    pending: int = Field(default=0, description="Deliveries still to send or to retry.")
    delivered: int = Field(default=0, description="Deliveries the receiver acknowledged (2xx).")
    failed: int = Field(default=0, description="Deliveries whose retry schedule ran out.")
    abandoned: int = Field(default=0, description="Deliveries dropped because the subscription was disabled.")


class Job(ApiModel):
    """A TranscodeJob as the shim shows it: its name, spec and status (exactly the CR's), and a few facts
    derived from them."""

    name: str = Field(description="The TranscodeJob's name, unique within your tenant.")
    uid: str = Field(description="Kubernetes UID of the TranscodeJob.")
    created_at: str = Field(description="When it was created (RFC 3339).")
    resource_version: str = Field(description="Changes on every update; SSE event ids use it.")
    deleting: bool = Field(default=False, description="True once a delete was requested.")
    retry_pending: bool = Field(
        default=False, description="True from POST /jobs/{name}/retry until the operator starts the new attempt "
                                   "(spec.manualRetry ahead of status.manualRetries); the phase is still Failed.")
    webhooks: list[WebhookSummary] | None = Field(
        default=None, description="Per webhook subscription: disabled or not, and its deliveries by state (of "
                                  "the latest 100 the operator keeps). Absent without spec.webhooks.")
    spec: TranscodeJobSpec = Field(
        description="What to transcode (immutable except suspend, cancel, priority, manualRetry and "
                    "ttlSecondsAfterFinished).")
    status: TranscodeJobStatus = Field(
        description="Where the job stands (phase, queue position, failureCategory, attemptHistory, ...); empty "
                    "until the operator sees it.")


class JobList(ApiModel):
    items: list[Job] = Field(description="Jobs, newest first.")
    continue_: str | None = Field(default=None, alias="continue",
                                  description="Pass as ?continue= for the next page; absent on the last page.")


class ErrorDetail(ApiModel):
    code: str = Field(description="Stable machine-readable code, such as validation_error or not_found.")
    message: str = Field(description="Human-readable explanation.")
    field: str | None = Field(default=None, description="The offending request field, when there is one.")


class Error(ApiModel):
    error: ErrorDetail = Field(description="What went wrong.")


class PresetJobRequest(ApiModel):
    """A job with one output that names a TranscodePreset (`outputs[0].preset`), plus optional overrides: the
    operator merges the preset into the output by its rule (docs/api.md, "Presets")."""

    input: InputSpec = Field(description="The source media.")
    output_uri: S3Uri = Field(
        description="Where the output is written, as s3://bucket/key.")
    output_name: Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)] | None = Field(
        default=None, description="Name of the output; defaults to the preset's name.")
    overrides: OutputSettings | None = Field(
        default=None, description="Output settings of the job's output, which override the preset's by the operator's "
                                  "merge rule (objects merge key by key, the output's values win; see docs/api.md). "
                                  "Only the fields given count: unset and null fields are not overrides.")
    accelerator: AcceleratorSpec | None = Field(default=None, description="As in a TranscodeJob spec.")
    resources: ResourcesSpec | None = Field(default=None, description="As in a TranscodeJob spec.")
    retry_limit: Annotated[int, Field(ge=0, le=10)] | None = Field(default=None,
                                                                   description="As in a TranscodeJob spec.")
    deadline_seconds: Annotated[int, Field(ge=30, le=604800)] | None = Field(
        default=None, description="As in a TranscodeJob spec.")
    priority: Annotated[int, Field(ge=-50, le=50)] | None = Field(default=None,
                                                                  description="As in a TranscodeJob spec.")
    pool: Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)] | None = Field(
        default=None, description="As in a TranscodeJob spec.")
    retry_backoff_seconds: Annotated[list[Annotated[int, Field(ge=0, le=86400)]], Field(
        min_length=1, max_length=10)] | None = Field(default=None, description="As in a TranscodeJob spec.")
    stall_timeout_seconds: Annotated[int, Field(ge=10, le=86400)] | None = Field(
        default=None, description="As in a TranscodeJob spec.")
    webhooks: Annotated[list[WebhookSpec], Field(max_length=5)] | None = Field(
        default=None, description="As in a TranscodeJob spec.")
    ttl_seconds_after_finished: Annotated[int, Field(ge=0, le=31536000)] | None = Field(
        default=None, description="As in a TranscodeJob spec.")


# PresetJobRequest fields copied into the job's spec as they are (the rest build its input and output).
PRESET_JOB_SPEC_FIELDS = ("accelerator", "resources", "retry_limit", "deadline_seconds", "priority", "pool",
                          "retry_backoff_seconds", "stall_timeout_seconds", "webhooks", "ttl_seconds_after_finished")


class Preset(ApiModel):
    name: str = Field(description="The TranscodePreset's name.")
    spec: TranscodePresetSpec = Field(description="Its spec, as the CRD defines it (settings and description).")


class PresetList(ApiModel):
    items: list[Preset] = Field(description="Presets installed in the cluster, by name.")


class PoolStats(ApiModel):
    queued: int = Field(description="Your jobs waiting for this pool's capacity (phase Queued).")
    starting: int = Field(description="Your jobs admitted to it whose pod is starting (phase Pending).")
    running: int = Field(description="Your jobs running in it.")
    capacity: int | None = Field(
        default=None, description="How many jobs the pool runs at once, across all tenants (the operator's "
                                  "pool config; absent when the shim is not given it).")


class QueueStats(ApiModel):
    queued: int = Field(description="Jobs waiting for pool capacity (phase Queued, or not yet seen by the "
                                    "operator).")
    starting: int = Field(description="Jobs admitted whose pod is starting (phase Pending).")
    running: int = Field(description="Jobs running.")
    suspended: int = Field(description="Jobs paused.")
    succeeded: int = Field(description="Jobs that succeeded.")
    failed: int = Field(description="Jobs that failed.")
    cancelled: int = Field(description="Jobs cancelled.")
    failed_by_category: dict[FailureCategory, int] = Field(
        description="Failed jobs by status.failureCategory (every category, 0 included); failed jobs without "
                    "one are only in failed.")
    pools: dict[str, PoolStats] = Field(
        description="Unfinished jobs by pool (status.queue.pool, else spec.pool), and every configured pool.")
    average_wait_seconds: float | None = Field(
        default=None, description="Mean time from creation to start, over jobs that started.")
    average_processing_seconds: float | None = Field(
        default=None, description="Mean time from start to completion, over jobs that succeeded.")


class DownloadUrl(ApiModel):
    output: str = Field(description="The output's name.")
    uri: str = Field(description="The output object, as s3://bucket/key.")
    url: str = Field(description="A presigned GET URL.")
    expires_at: str = Field(description="When the URL stops working (RFC 3339).")


# One path segment of an object key: any characters but '/' and control characters (transkube_api.s3uri).
FILENAME_PATTERN = rf"^[^/{CONTROL_CHARS}]+$"


def _one_segment(name: str) -> str:
    if "/" in name:
        raise ValueError("a file name has no '/': it is one segment of the object key")
    if re.search(f"[{CONTROL_CHARS}]", name):
        raise ValueError("a file name has no control characters")
    if has_dot_segment(name):
        raise ValueError("a file name may not be '.' or '..' (also percent-encoded, or between backslashes): "
                         "storage servers may resolve it")
    return name


class UploadRequest(ApiModel):
    filename: Annotated[str, Field(min_length=1, max_length=255, json_schema_extra={"pattern": FILENAME_PATTERN}),
                        AfterValidator(_one_segment)] = Field(
        description="The file's name, as people name files (spaces, unicode, + & # % = ...); it ends the object "
                    "key, taken literally. No '/', no control characters, not '.' or '..'.")
    size: Annotated[int, Field(ge=1, le=5 * 1024**4)] | None = Field(
        default=None, description="Total size in bytes, if known: the answer then says how many parts to send.")
    part_size: Annotated[int, Field(ge=5 * 1024**2, le=5 * 1024**3)] | None = Field(
        default=None, description="Bytes per part (every part but the last); at least 5 MiB, as S3 requires.")
    # A header value: visible ASCII and spaces (a control character would make the S3 request fail, a 5xx).
    content_type: Annotated[str, Field(max_length=255, pattern=r"^[\x21-\x7e][\x20-\x7e]*$")] | None = Field(
        default=None, description="The object's Content-Type (visible ASCII).")


class Upload(ApiModel):
    upload_id: str = Field(description="Opaque id of this multipart upload.")
    uri: str = Field(description="The object once completed, as s3://bucket/key: use it as a job's input.uri.")
    part_size: int = Field(description="Bytes per part (every part but the last).")
    part_count: int | None = Field(default=None, description="How many parts, when size was given.")
    expires_at: str = Field(description="Unfinished uploads are aborted after this time (RFC 3339).")


class PartUrlsRequest(ApiModel):
    part_numbers: Annotated[list[Annotated[int, Field(ge=1, le=10000)]], Field(min_length=1, max_length=1000)] = \
        Field(description="Which parts (1-based) to sign URLs for.")


class PartUrl(ApiModel):
    part_number: int = Field(description="1-based part number.")
    url: str = Field(description="Presigned PUT URL for this part; keep the ETag header of the answer.")


class PartUrls(ApiModel):
    parts: list[PartUrl] = Field(description="One URL per requested part.")
    expires_at: str = Field(description="When the URLs stop working (RFC 3339).")


class CompletedPart(ApiModel):
    part_number: Annotated[int, Field(ge=1, le=10000)] = Field(description="1-based part number.")
    etag: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        description="The ETag header S3 returned for the part's PUT.")


class CompleteUploadRequest(ApiModel):
    parts: Annotated[list[CompletedPart], Field(min_length=1, max_length=10000)] = Field(
        description="Every part, in any order.")


class CompletedUpload(ApiModel):
    uri: str = Field(description="The object, as s3://bucket/key.")
    size_bytes: int | None = Field(default=None, description="Its size.")


class Health(ApiModel):
    status: Literal["ok", "unavailable"] = Field(description="ok when every check passed.")
    checks: dict[str, str] = Field(
        default_factory=dict, description="Each check's result: ok, failed: <why>, or degraded: <why> (the API "
                                          "server is unreachable but the job cache is serving reads; still ready).")
    cache_stale_seconds: float | None = Field(
        default=None, description="How long the job cache has been out of touch with the API server; absent "
                                  "while it is in sync.")


# Models that become components of the OpenAPI document, in order.
COMPONENT_MODELS: tuple[type[ApiModel], ...] = (
    TranscodeJobSpec, TranscodeJobStatus, TranscodePresetSpec, Job, JobList, Error, PresetJobRequest, PresetList,
    QueueStats,
    DownloadUrl, UploadRequest, Upload, PartUrlsRequest, PartUrls, CompleteUploadRequest, CompletedUpload, Health,
)
