"""Writes the worker's part of the TranscodeJob status: `progress`, `input` and `outputs`, nothing else (the
operator owns phase, conditions and the rest), as JSON merge patches on the status subresource.

kubernetes 35 (the classic generated client): `patch_namespaced_custom_object_status` offers exactly one
Content-Type, `application/merge-patch+json`, and `select_header_content_type` returns a single offered type
unchanged, so the request is a merge patch without any override (it accepts no `_content_type` argument).
tests/unit/test_worker_status_writer.py pins that behaviour of the installed client.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from transkube_api.constants import GROUP, PLURAL, VERSION
from transkube_api.models import InputFacts, OutputResult, Progress

from .errors import JobGone, WorkerError

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = (5, 15)  # (connect, read) seconds: a slow API server must not stall the transcode for long
FINAL_ATTEMPTS = 3  # with REQUEST_TIMEOUT, bounded well inside a pod's termination grace period


def progress_wire(progress: Progress) -> dict[str, Any]:
    """Progress as a merge-patch value: `.wire()` plus explicit nulls for unset fields, because in a merge
    patch an absent key keeps its old value (fps/eta from Transcoding would linger into Uploading)."""
    cleared: dict[str, Any] = {field.alias or name: None for name, field in Progress.model_fields.items()}
    return cleared | progress.wire()


def status_patch(progress: Progress | None = None, input_facts: InputFacts | None = None,
                 outputs: Sequence[OutputResult] | None = None) -> dict[str, Any]:
    """The merge patch body; only the worker-owned keys ever appear."""
    status: dict[str, Any] = {}
    if progress is not None:
        status["progress"] = progress_wire(progress)
    if input_facts is not None:
        status["input"] = input_facts.wire()
    if outputs is not None:
        status["outputs"] = [o.wire() for o in outputs]  # lists are replaced whole by a merge patch
    return {"status": status}


class StatusWriter(Protocol):
    def attach_input(self, facts: InputFacts) -> None: ...
    def attach_outputs(self, outputs: Sequence[OutputResult]) -> None: ...
    def write_progress(self, progress: Progress) -> None: ...
    def write_final(self, progress: Progress) -> None: ...


class NullStatusWriter:
    """TRANSKUBE_STATUS_WRITES=false: run outside a cluster (benchmarks, local debugging)."""

    def attach_input(self, facts: InputFacts) -> None:
        pass

    def attach_outputs(self, outputs: Sequence[OutputResult]) -> None:
        pass

    def write_progress(self, progress: Progress) -> None:
        pass

    def write_final(self, progress: Progress) -> None:
        pass


def load_custom_objects_api() -> Any:
    """In-cluster config (the pod's service account); KUBECONFIG for local runs."""
    from kubernetes import client, config  # imported lazily: the bench and unit tests never need it

    try:
        config.load_incluster_config()
    except config.ConfigException:
        if not os.environ.get("KUBECONFIG"):
            raise
        config.load_kube_config()
    return client.CustomObjectsApi()


class KubeStatusWriter:
    """Patches status; `input`/`outputs` are attached and ride along with the next progress write, so each
    stage change is one request. A failed write keeps them attached for the next one.

    Failures never fail the transcode (logged, skipped), except 404: the TranscodeJob is gone, so JobGone is
    raised and the worker stops.
    """

    def __init__(self, namespace: str, name: str, api: Any = None, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._namespace = namespace
        self._name = name
        self._api = api
        self._sleep = sleep
        self._input: InputFacts | None = None
        self._outputs: list[OutputResult] | None = None

    def attach_input(self, facts: InputFacts) -> None:
        self._input = facts

    def attach_outputs(self, outputs: Sequence[OutputResult]) -> None:
        self._outputs = list(outputs)

    def _patch(self, body: dict[str, Any]) -> None:
        if self._api is None:
            self._api = load_custom_objects_api()
        self._api.patch_namespaced_custom_object_status(GROUP, VERSION, self._namespace, PLURAL, self._name, body,
                                                        _request_timeout=REQUEST_TIMEOUT)

    def _try_write(self, progress: Progress) -> bool:
        body = status_patch(progress, self._input, self._outputs)
        try:
            self._patch(body)
        except WorkerError:
            raise  # Terminated by a signal mid-request: not a write failure to shrug off
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                raise JobGone(f"TranscodeJob {self._namespace}/{self._name} no longer exists") from exc
            log.warning("status write failed; continuing", extra={"fields": {
                "stage": progress.stage, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}})
            return False
        self._input = None
        self._outputs = None
        return True

    def write_progress(self, progress: Progress) -> None:
        self._try_write(progress)

    def write_final(self, progress: Progress) -> None:
        """The Done write carries status.outputs: worth a few retries, but the outputs are safely in storage,
        so even a final failure only logs (failing would re-run the whole transcode)."""
        for attempt in range(FINAL_ATTEMPTS):
            if self._try_write(progress):
                return
            if attempt < FINAL_ATTEMPTS - 1:
                self._sleep(2.0**attempt)
        log.error("could not write the final status; outputs are in storage but not listed in status")
