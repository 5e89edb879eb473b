"""The status writer: the merge-patch body, the Content-Type the installed kubernetes client really sends, and
which failures stop the worker (only 404). No cluster: the HTTP layer of the real client is replaced."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from transkube_api.constants import GROUP, PLURAL, VERSION
from transkube_api.models import InputFacts, OutputResult, Progress
from transkube_worker.errors import JobGone, Terminated
from transkube_worker.status_writer import KubeStatusWriter, status_patch

PROGRESS = Progress(stage="Uploading", percent=97.5, updated_at="2025-01-01T00:00:00Z")
FACTS = InputFacts(duration_seconds=12.5, width=1920, height=1080, video_codec="h264")
RESULT = OutputResult(name="web", uri="s3://b/web.mp4", size_bytes=10, checksum="sha256:00")


def test_patch_touches_only_worker_keys() -> None:
    body = status_patch(PROGRESS, FACTS, [RESULT])
    assert set(body) == {"status"}
    assert set(body["status"]) == {"progress", "input", "outputs"}
    assert body["status"]["input"] == {"durationSeconds": 12.5, "width": 1920, "height": 1080, "videoCodec": "h264"}
    assert body["status"]["outputs"] == [{"name": "web", "uri": "s3://b/web.mp4", "sizeBytes": 10,
                                          "checksum": "sha256:00"}]
    assert status_patch(PROGRESS) == {"status": {"progress": body["status"]["progress"]}}


def test_progress_clears_stale_fields_with_nulls() -> None:
    # A merge patch keeps keys it does not mention: fps/eta from Transcoding must be nulled explicitly.
    assert status_patch(PROGRESS)["status"]["progress"] == {
        "stage": "Uploading", "percent": 97.5, "fps": None, "speed": None, "etaSeconds": None, "eta": None,
        "updatedAt": "2025-01-01T00:00:00Z"}


class FakeResponse:
    status = 200
    reason = "OK"
    data = b"{}"

    def getheaders(self) -> dict[str, str]:
        return {}

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return default


def real_client_capturing(calls: list[dict[str, Any]]) -> Any:
    """The real generated CustomObjectsApi; only the urllib3 layer is replaced."""
    api_client = k8s.ApiClient(k8s.Configuration(host="https://127.0.0.1:1"))

    def request(method: str, url: str, **kwargs: Any) -> FakeResponse:
        calls.append({"method": method, "url": url, **kwargs})
        return FakeResponse()

    api_client.rest_client.request = request
    return k8s.CustomObjectsApi(api_client)


def test_installed_client_sends_a_merge_patch_to_the_status_subresource() -> None:
    calls: list[dict[str, Any]] = []
    writer = KubeStatusWriter("ns1", "job1", real_client_capturing(calls))
    writer.attach_input(FACTS)
    writer.write_progress(PROGRESS)
    [call] = calls
    assert call["method"] == "PATCH"
    assert call["url"].endswith(f"/apis/{GROUP}/{VERSION}/namespaces/ns1/{PLURAL}/job1/status")
    assert call["headers"]["Content-Type"] == "application/merge-patch+json"
    assert call["body"] == status_patch(PROGRESS, FACTS)
    assert call["_request_timeout"] is not None  # a hung API server must not hang the worker
    json.dumps(call["body"])  # serialisable as is


class FakeApi:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.bodies: list[dict[str, Any]] = []

    def patch_namespaced_custom_object_status(self, group: str, version: str, namespace: str, plural: str,
                                              name: str, body: dict[str, Any], **kwargs: Any) -> None:
        self.bodies.append(body)
        if self.errors:
            raise self.errors.pop(0)


def test_attachments_ride_along_once_and_survive_failures() -> None:
    api = FakeApi(ApiException(status=500, reason="boom"))
    writer = KubeStatusWriter("ns", "n", api)
    writer.attach_input(FACTS)
    writer.write_progress(PROGRESS)  # fails: logged, not raised
    writer.write_progress(PROGRESS)  # retried with the input still attached
    writer.write_progress(PROGRESS)  # input already written: progress only
    assert ["input" in b["status"] for b in api.bodies] == [True, True, False]


@pytest.mark.parametrize("error", [ApiException(status=403, reason="Forbidden"), ApiException(status=409),
                                   ConnectionError("refused"), TimeoutError()])
def test_write_failures_never_fail_the_worker(error: Exception) -> None:
    KubeStatusWriter("ns", "n", FakeApi(error)).write_progress(PROGRESS)


def test_deleted_transcodejob_stops_the_worker() -> None:
    with pytest.raises(JobGone) as info:
        KubeStatusWriter("ns", "n", FakeApi(ApiException(status=404, reason="Not Found"))).write_progress(PROGRESS)
    assert info.value.exit_code == 20 and info.value.reason == "TranscodeJobDeleted"


def test_a_signal_mid_request_is_not_swallowed() -> None:
    with pytest.raises(Terminated):
        KubeStatusWriter("ns", "n", FakeApi(Terminated("stopped by SIGTERM"))).write_progress(PROGRESS)


def test_final_write_retries_then_gives_up_quietly() -> None:
    sleeps: list[float] = []
    api = FakeApi(*[ApiException(status=503)] * 10)
    writer = KubeStatusWriter("ns", "n", api, sleep=sleeps.append)
    writer.attach_outputs([RESULT])
    writer.write_final(Progress(stage="Done", percent=100))
    assert len(api.bodies) == 3 and sleeps == [1.0, 2.0]
    assert all(b["status"]["outputs"] for b in api.bodies)

    api = FakeApi(ApiException(status=503))
    writer = KubeStatusWriter("ns", "n", api, sleep=sleeps.append)
    writer.write_final(Progress(stage="Done", percent=100))
    assert len(api.bodies) == 2  # succeeded on the second try
