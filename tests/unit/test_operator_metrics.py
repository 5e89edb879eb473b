"""The operator's lifecycle metrics are pure observations of a reconcile's plan."""

from __future__ import annotations

import datetime as dt
from typing import Any

from transkube_operator.metrics import Observation, observations, profile_of

NOW = dt.datetime(2026, 11, 21, 12, 0, 0, tzinfo=dt.UTC)


def tj(status: dict[str, Any] | None = None, preset: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": "o", "uri": "s3://b/o.mp4"}
    if preset:
        out["preset"] = preset
    return {"metadata": {"creationTimestamp": "2026-11-21T11:59:00Z"}, "spec": {"outputs": [out]},
            "status": status or {}}


def test_profile_is_the_shared_preset_or_custom() -> None:
    assert profile_of(tj(preset="web-720p")) == "web-720p"
    assert profile_of(tj()) == "custom"


def test_first_start_records_queue_wait() -> None:
    obs = observations(tj({"phase": "Pending"}), "Running", {"attempts": 1}, [("Started", "worker pod x")], NOW)
    assert obs == [Observation("queue_wait", (("profile", "custom"), ("accelerator", "cpu")), 60.0)]
    # A restart after a retry is not queue time.
    assert observations(tj({"phase": "Pending", "attempts": 2}), "Running", {}, [("Started", "x")], NOW) == []


def test_success_records_run_time_and_encode_speed() -> None:
    before = {"phase": "Running", "startTime": "2026-11-21T11:59:30Z", "input": {"durationSeconds": 60.0},
              "accelerator": {"effective": "nvidia"}}
    obs = observations(tj(before, preset="web-720p"), "Succeeded", {}, [("Succeeded", "done")], NOW)
    base = (("profile", "web-720p"), ("accelerator", "nvidia"))
    assert Observation("run_time", (*base, ("phase", "Succeeded")), 30.0) in obs
    assert Observation("encode_speed", base, 2.0) in obs
    # Only on the transition: a settled terminal job records nothing more.
    assert observations(tj({**before, "phase": "Succeeded"}), "Succeeded", {}, [], NOW) == []


def test_failures_retries_and_fallbacks_are_counted_by_reason() -> None:
    obs = observations(tj({"phase": "Running"}), "Failed", {"reason": "InputNotFound"}, [("Failed", "x")], NOW)
    assert Observation("failure", (("reason", "InputNotFound"),)) in obs
    retry = observations(tj({"phase": "Running", "attempts": 1}), "Running", {"attempts": 2},
                         [("Retrying", "attempt 2 of 3 started after TransientError: S3 timed out")], NOW)
    assert retry == [Observation("retry", (("reason", "TransientError"),))]
    assert observations(tj({"phase": "Pending"}), "Pending", {}, [("FallbackToCPU", "no GPU")], NOW) == \
        [Observation("fallback")]
