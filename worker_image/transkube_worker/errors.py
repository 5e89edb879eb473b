"""Failure classes of the worker. Each maps to one exit code (the Job's podFailurePolicy keys off it) and a
reason for the termination message (the operator copies it into status.reason/message)."""

from __future__ import annotations

import json

from transkube_api.constants import (
    REASON_BY_EXIT_CODE,
    REASON_QUALITY_BELOW_THRESHOLD,
    REASON_STORAGE_ACCESS_DENIED,
    REASON_TERMINATED,
    REASON_TRANSCODEJOB_DELETED,
    ExitCode,
)

# Kubernetes keeps up to 4 KiB of termination message; we stay well below so it is never cut mid-JSON.
TERMINATION_MESSAGE_LIMIT = 1024


class WorkerError(Exception):
    """A failure the worker understands: it knows its exit code and a short, user-facing message."""

    exit_code: int = ExitCode.INTERNAL
    # None means "the reason that goes with the exit code" (REASON_BY_EXIT_CODE).
    reason_override: str | None = None

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason_override = reason

    @property
    def reason(self) -> str:
        return self.reason_override or REASON_BY_EXIT_CODE.get(self.exit_code, "WorkerFailed")


class InvalidInput(WorkerError):
    exit_code = ExitCode.INVALID_INPUT


class InputNotFound(WorkerError):
    exit_code = ExitCode.INPUT_NOT_FOUND


class Unsupported(WorkerError):
    exit_code = ExitCode.UNSUPPORTED


class StorageDenied(Unsupported):
    """Credentials missing or refused. Permanent: every retry pod gets the same Secret, so retrying only burns
    the retry budget; the user must fix the credentials and resubmit. Exit code UNSUPPORTED is the permanent
    class closest in meaning ("this job's spec points at storage this worker cannot use"); the reason says what
    actually happened."""

    reason_override = REASON_STORAGE_ACCESS_DENIED


class QualityBelowThreshold(Unsupported):
    """An output's quality metric is below its gate's min. Permanent (exit UNSUPPORTED): the same input and
    settings encode to the same quality every time, so a retry only burns the budget."""

    reason_override = REASON_QUALITY_BELOW_THRESHOLD


class Transient(WorkerError):
    exit_code = ExitCode.TRANSIENT


class Terminated(Transient):
    """SIGTERM/SIGINT: the pod is being deleted, evicted or suspended. Another attempt may run later."""

    reason_override = REASON_TERMINATED


class JobGone(Transient):
    """The TranscodeJob was deleted while we were working on it: stop, nobody wants the result."""

    reason_override = REASON_TRANSCODEJOB_DELETED


class Internal(WorkerError):
    exit_code = ExitCode.INTERNAL


def termination_message(reason: str, message: str, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """The JSON termination message, at most `limit` UTF-8 bytes; the message's *tail* is kept when cutting
    because ffmpeg's last stderr lines are the ones that explain the failure."""
    doc = {"reason": reason, "message": message}
    text = json.dumps(doc, ensure_ascii=False)
    if len(text.encode()) <= limit:
        return text
    keep = len(message)
    while keep > 0:
        # Shrink by the overshoot (in characters, a safe over-estimate for multi-byte text) until it fits.
        over = len(json.dumps({"reason": reason, "message": "…" + message[-keep:]}, ensure_ascii=False).encode())
        if over <= limit:
            break
        keep -= max(1, over - limit)
    return json.dumps({"reason": reason, "message": "…" + message[-keep:] if keep > 0 else ""}, ensure_ascii=False)
