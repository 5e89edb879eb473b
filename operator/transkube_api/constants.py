"""Names of the API and the facts every component shares about it."""

from __future__ import annotations

# A DNS name the project owns, so the group can never collide with another vendor's CRDs.
GROUP = "media.transkube.dev"
VERSION = "v1alpha1"
KIND = "TranscodeJob"
PLURAL = "transcodejobs"
SINGULAR = "transcodejob"
SHORT_NAME = "tj"
CATEGORY = "transkube"
API_VERSION = f"{GROUP}/{VERSION}"

# Labels and annotations we own.
PREFIX = "transkube.dev"
LABEL_JOB = f"{PREFIX}/transcodejob"
LABEL_ACCELERATOR = f"{PREFIX}/accelerator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "transkube-operator"
WORKER_CONTAINER = "worker"


class ExitCode:
    """The worker's exit codes, one per failure class; podFailurePolicy keys off them."""

    OK = 0
    INVALID_INPUT = 10  # corrupt or undecodable input: retrying cannot help
    INPUT_NOT_FOUND = 11  # the input object does not exist: retrying cannot help
    UNSUPPORTED = 12  # the spec asks for something this worker/ffmpeg cannot do
    TRANSIENT = 20  # storage/network trouble, or SIGTERM: a retry may succeed
    INTERNAL = 30  # a bug or an unexpected ffmpeg failure: counted against retryLimit

    PERMANENT = (INVALID_INPUT, INPUT_NOT_FOUND, UNSUPPORTED)


# Failure reasons the worker reports in its termination message, by exit code.
REASON_BY_EXIT_CODE = {
    ExitCode.INVALID_INPUT: "InvalidInput",
    ExitCode.INPUT_NOT_FOUND: "InputNotFound",
    ExitCode.UNSUPPORTED: "Unsupported",
    ExitCode.TRANSIENT: "TransientError",
    ExitCode.INTERNAL: "InternalError",
}

# Reasons the worker reports beyond the exit-code classes, so the shim and the operator name them alike.
REASON_TERMINATED = "Terminated"  # SIGTERM (cancel, suspend, eviction): exit TRANSIENT
REASON_STORAGE_ACCESS_DENIED = "StorageAccessDenied"  # credentials refused: exit UNSUPPORTED (a retry can't help)
REASON_OUTPUT_BUCKET_NOT_FOUND = "OutputBucketNotFound"  # exit UNSUPPORTED
REASON_TRANSCODEJOB_DELETED = "TranscodeJobDeleted"  # the CR vanished mid-run: exit TRANSIENT

# Input limits the worker enforces after probing (exit INVALID_INPUT, never retried). The operator passes the
# limits to the worker as TRANSKUBE_MAX_* environment variables; docs/media.md lists the defaults.
REASON_INPUT_TOO_LARGE = "InputTooLarge"  # the input object is bigger than maxInputBytes (checked before download)
REASON_DURATION_LIMIT = "DurationLimitExceeded"
REASON_RESOLUTION_LIMIT = "ResolutionLimitExceeded"
REASON_TOO_MANY_STREAMS = "TooManyStreams"
# An output needs a stream the input lacks (exit INVALID_INPUT, never retried): video (or a poster, thumbnails, a
# sprite, an hls/dash ladder) from an audio-only input, audio (an audio container) from a video-only input, or an
# explicit audio.track past the input's audio streams.
REASON_NO_VIDEO_STREAM = "NoVideoStream"
REASON_NO_AUDIO_STREAM = "NoAudioStream"
REASON_AUDIO_TRACK_NOT_FOUND = "AudioTrackNotFound"

# Input limit defaults (worker env name, default). 0 means "no limit" for the byte sizes.
LIMIT_DEFAULTS: dict[str, int] = {
    "TRANSKUBE_MAX_INPUT_BYTES": 0,
    "TRANSKUBE_MAX_DURATION_SECONDS": 24 * 3600,
    "TRANSKUBE_MAX_PIXELS": 7680 * 4320,  # 8K UHD
    "TRANSKUBE_MAX_STREAMS": 32,
    "TRANSKUBE_MAX_OUTPUT_BYTES": 0,
}

# The cluster-scoped TranscodePreset kind: reusable output settings, referenced by outputs[].preset.
PRESET_KIND = "TranscodePreset"
PRESET_PLURAL = "transcodepresets"
PRESET_SINGULAR = "transcodepreset"
PRESET_SHORT_NAME = "tp"
# Why the operator fails a job whose presets cannot be resolved (no Job is created).
REASON_PRESET_NOT_FOUND = "PresetNotFound"
REASON_INVALID_PRESET = "InvalidPreset"
# The quality gate: an output below its gate's min (after the one re-encode, if asked for). Exit UNSUPPORTED,
# a permanent class: the same input with the same settings encodes to the same quality, a retry cannot help.
REASON_QUALITY_BELOW_THRESHOLD = "QualityBelowThreshold"

# Scheduling and lifecycle (issue 7).
LABEL_POOL = f"{PREFIX}/pool"
LABEL_PRIORITY = f"{PREFIX}/priority"
LABEL_FAILURE_CATEGORY = f"{PREFIX}/failure-category"  # on Failed TranscodeJobs: the dead-letter view
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
ANNOTATION_FAULT_INJECTION = f"{PREFIX}/fault-injection"  # test-only, honoured when the operator allows it
ANNOTATION_FAULT_ATTEMPTS = f"{PREFIX}/fault-injection-attempts"
REASON_QUOTA_EXCEEDED = "QuotaExceeded"
REASON_POOL_NOT_FOUND = "PoolNotFound"
REASON_POOL_MISMATCH = "PoolMismatch"
REASON_STALLED = "Stalled"
# The spec names an S3 URI outside what its namespace may use (storage confinement, transkube_api.scope): the
# operator fails the job before it creates a Job, for clusters without the admission policy.
REASON_URI_FORBIDDEN = "UriForbidden"

# status.failureCategory of a Failed job, by its reason; anything not listed is Internal.
CATEGORY_BY_REASON: dict[str, str] = {
    "InvalidInput": "BadInput", "InputNotFound": "BadInput", REASON_INPUT_TOO_LARGE: "BadInput",
    REASON_DURATION_LIMIT: "BadInput", REASON_RESOLUTION_LIMIT: "BadInput", REASON_TOO_MANY_STREAMS: "BadInput",
    REASON_NO_VIDEO_STREAM: "BadInput", REASON_NO_AUDIO_STREAM: "BadInput", REASON_AUDIO_TRACK_NOT_FOUND: "BadInput",
    "Unsupported": "Unsupported",
    REASON_STORAGE_ACCESS_DENIED: "Config", REASON_OUTPUT_BUCKET_NOT_FOUND: "Config",
    REASON_PRESET_NOT_FOUND: "Config", REASON_INVALID_PRESET: "Config", "InvalidSpec": "Config",
    REASON_POOL_NOT_FOUND: "Config", REASON_POOL_MISMATCH: "Config", "CreateContainerConfigError": "Config",
    REASON_URI_FORBIDDEN: "Config",
    REASON_QUALITY_BELOW_THRESHOLD: "Quality",
    "TransientError": "Transient", REASON_TERMINATED: "Transient", REASON_TRANSCODEJOB_DELETED: "Transient",
    REASON_STALLED: "Stalled",
    "DeadlineExceeded": "Timeout",
    REASON_QUOTA_EXCEEDED: "Quota",
}


def failure_category(reason: str | None) -> str:
    return CATEGORY_BY_REASON.get(reason or "", "Internal")
LABEL_ROLE = f"{PREFIX}/role"  # on Jobs: "cleanup" for the partial-output cleanup Job (worker Jobs have none)
ROLE_CLEANUP = "cleanup"
