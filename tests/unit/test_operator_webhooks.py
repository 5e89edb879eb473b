"""The webhook outbox, without a cluster: which events a reconcile queues, and how delivery results are kept."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import pytest
from transkube_api.models import TranscodeJobSpec, TranscodeJobStatus, WebhookDelivery, WebhookState
from transkube_operator.webhooks import (
    MAX_DELIVERIES,
    WebhookConfig,
    due,
    event_body,
    event_id,
    next_due,
    outbox_update,
    record_failure,
    record_result,
)

Obj = dict[str, Any]
NOW = dt.datetime(2026, 11, 21, 12, 0, 0, tzinfo=dt.UTC)
CFG = WebhookConfig()
# When the worker wrote its progress (worker-written progress carries updatedAt).
UPDATED = "2026-11-21T00:00:00Z"
ALL = ["queued", "started", "progress", "succeeded", "failed", "cancelled"]


@dataclass(frozen=True)
class Res:
    ok: bool
    status: int | None
    reason: str = ""
    message: str = ""


OK = Res(True, 204, "Delivered", "")
BAD = Res(False, 500, "HTTPError", "receiver answered 500")
GONE = Res(False, 410, "Gone", "receiver answered 410")


def sub(name: str = "hook", events: list[str] | None = None, interval: int = 30) -> Obj:
    return {"name": name, "url": "https://example.com/hook", "events": events or ALL,
            "secretRef": {"name": "hook-secret"}, "progressIntervalSeconds": interval}


def tj(*subs: Obj) -> Obj:
    return {"metadata": {"name": "movie", "namespace": "media", "uid": "uid-1"},
            "spec": {"input": {"uri": "s3://media/in.mp4"},
                     "outputs": [{"name": "web", "uri": "s3://media/out.mp4", "container": "mp4"}],
                     "webhooks": list(subs) if subs else [sub()]}}


def at(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def step(obj: Obj, old: Obj, new: Obj, now: dt.datetime = NOW) -> Obj:
    """One reconcile: the plan's status plus the outbox keys, as the API server would store them."""
    return {**new, **outbox_update(obj, old, new, now, CFG)}


def types(status: Obj) -> list[str]:
    return [d["type"] for d in status.get("webhookDeliveries") or []]


def only(status: Obj) -> Obj:
    (entry,) = status["webhookDeliveries"]
    assert isinstance(entry, dict)
    return entry


def running(percent: float | None = None, attempts: int = 1, **extra: Any) -> Obj:
    status: Obj = {"phase": "Running", "attempts": attempts, **extra}
    if percent is not None:
        status["progress"] = {"stage": "Transcoding", "percent": percent, "updatedAt": UPDATED}
    return status


# --- events ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("phase", "event"), [("Queued", "queued"), ("Running", "started"),
                                              ("Succeeded", "succeeded"), ("Failed", "failed"),
                                              ("Cancelled", "cancelled")])
def test_each_phase_event_fires_once_per_transition(phase: str, event: str) -> None:
    obj = tj()
    new = {"phase": phase, "attempts": 1}
    after = step(obj, {"phase": "Running" if phase in ("Succeeded", "Failed", "Cancelled") else "Pending"}, new)
    entry = only(after)
    assert entry["type"] == f"transcodejob.{event}"
    assert entry["state"] == "Pending" and entry["attempts"] == 0
    assert entry["eventTime"] == entry["nextAttemptTime"] == "2026-11-21T12:00:00Z"
    assert entry["webhook"] == "hook" and entry["id"].startswith("msg_")
    # The next reconcile sees the phase already there: nothing new.
    assert outbox_update(obj, after, after, at(60), CFG) == {}


@pytest.mark.parametrize(("old_phase", "phase"), [("Queued", "Succeeded"), ("Pending", "Failed")])
def test_an_attempt_never_seen_running_still_gets_its_started_event_first(old_phase: str, phase: str) -> None:
    # It ran and ended between two reconciles: a short job, or one that ran while the operator failed over.
    obj = tj()
    after = step(obj, {"phase": old_phase, "attempts": 0},
                 {"phase": phase, "attempts": 1, "reason": "BadInput" if phase == "Failed" else None})
    assert types(after) == ["transcodejob.started", f"transcodejob.{phase.lower()}"]
    started = after["webhookDeliveries"][0]
    assert started["id"] == event_id("uid-1", "hook", "started", 0, 1)
    assert started["data"]["phase"] == "Running" and "reason" not in started["data"]
    assert outbox_update(obj, after, after, at(60), CFG) == {}


def test_a_job_that_never_ran_gets_no_started_event() -> None:
    after = step(tj(), {"phase": "Queued"}, {"phase": "Failed", "attempts": 0, "reason": "UriForbidden"})
    assert types(after) == ["transcodejob.failed"]
    cancelled = step(tj(), {"phase": "Queued"}, {"phase": "Cancelled", "attempts": 1})
    assert types(cancelled) == ["transcodejob.cancelled"]


def test_replaying_a_reconcile_adds_nothing() -> None:
    obj = tj()
    old = {"phase": "Pending", "attempts": 1}
    after = step(obj, old, running(attempts=1))
    # The same transition computed again (say the operator restarted before it saw its own patch).
    assert outbox_update(obj, old, after, at(1), CFG) == {}
    assert types(after) == ["transcodejob.started"]


def test_a_whole_job_queues_its_events_in_order() -> None:
    obj = tj()
    s0: Obj = {}
    s1 = step(obj, s0, {"phase": "Queued"})
    s2 = step(obj, s1, {**s1, "phase": "Pending"}, at(1))
    s3 = step(obj, s2, {**s2, **running(attempts=1)}, at(2))
    s4 = step(obj, s3, {**s3, "progress": {"stage": "Transcoding", "percent": 10, "updatedAt": UPDATED}}, at(3))
    s5 = step(obj, s4, {**s4, "phase": "Succeeded", "progress": {"stage": "Done", "percent": 100, "updatedAt": UPDATED},
                        "outputs": [{"name": "web", "uri": "s3://media/out.mp4", "sizeBytes": 5}]}, at(4))
    assert types(s5) == ["transcodejob.queued", "transcodejob.started", "transcodejob.progress",
                         "transcodejob.succeeded"]
    done = s5["webhookDeliveries"][-1]["data"]
    assert done == {"name": "movie", "namespace": "media", "uid": "uid-1", "phase": "Succeeded", "attempts": 1,
                    "outputs": [{"name": "web", "uri": "s3://media/out.mp4"}]}
    assert len({d["id"] for d in s5["webhookDeliveries"]}) == 4


def test_failed_event_carries_reason_and_category() -> None:
    after = step(tj(), running(50), {"phase": "Failed", "attempts": 3, "reason": "BadInput",
                                     "message": "no video stream", "failureCategory": "BadInput",
                                     "progress": {"stage": "Probing", "percent": 50, "updatedAt": UPDATED}})
    data = only(after)["data"]
    assert data == {"name": "movie", "namespace": "media", "uid": "uid-1", "phase": "Failed", "attempts": 3,
                    "reason": "BadInput", "message": "no video stream", "failureCategory": "BadInput"}


def test_unsubscribed_events_are_ignored() -> None:
    obj = tj(sub(events=["succeeded", "failed"]))
    s1 = step(obj, {}, {"phase": "Queued"})
    s2 = step(obj, s1, {**s1, **running(40)})
    s3 = step(obj, s2, {**s2, **running(60)}, at(100))
    assert types(s3) == []
    s4 = step(obj, s3, {**s3, "phase": "Cancelled"}, at(200))
    assert types(s4) == []
    s5 = step(obj, s3, {**s3, "phase": "Failed"}, at(200))
    assert types(s5) == ["transcodejob.failed"]


def test_disabled_subscriptions_are_ignored() -> None:
    obj = tj(sub("a"), sub("b"))
    old: Obj = {"phase": "Pending", "webhooks": [{"name": "a", "disabled": True, "disabledReason": "gone"},
                                                 {"name": "b"}]}
    after = step(obj, old, {**old, **running()})
    assert [d["webhook"] for d in after["webhookDeliveries"]] == ["b"]


def test_every_subscription_gets_a_state_and_its_own_entry() -> None:
    obj = tj(sub("a"), sub("b", events=["failed"]))
    after = step(obj, {}, {"phase": "Queued"})
    assert after["webhooks"] == [{"name": "a"}, {"name": "b"}]
    assert [d["webhook"] for d in after["webhookDeliveries"]] == ["a"]
    # Nothing happened and nothing to change.
    assert outbox_update(obj, after, after, at(1), CFG) == {}


def test_no_subscriptions_no_status_keys() -> None:
    obj = tj()
    obj["spec"].pop("webhooks")
    assert outbox_update(obj, {}, {"phase": "Queued"}, NOW, CFG) == {}


def test_removed_subscription_loses_state_and_pending_entries() -> None:
    obj = tj(sub("a"), sub("b"))
    s1 = step(obj, {}, {"phase": "Queued"})
    s1 = {**s1, **record_result(s1, s1["webhookDeliveries"][0]["id"], OK, at(1), CFG)}
    patch = outbox_update(tj(sub("a")), s1, s1, at(2), CFG)
    assert patch["webhooks"] == [{"name": "a"}]
    a, b = patch["webhookDeliveries"]
    assert a["state"] == "Delivered"
    assert b["state"] == "Abandoned" and "removed" in b["lastError"] and "nextAttemptTime" not in b


# --- ids -------------------------------------------------------------------------------------------------------


def test_ids_are_deterministic() -> None:
    assert event_id("uid-1", "hook", "started", 0, 1) == event_id("uid-1", "hook", "started", 0, 1)
    a = step(tj(), {}, {"phase": "Queued"})
    b = step(tj(), {}, {"phase": "Queued"}, at(30))
    assert only(a)["id"] == only(b)["id"]
    assert len(only(a)["id"]) == len("msg_") + 24


def test_ids_differ_across_attempts_rounds_subscriptions_and_jobs() -> None:
    ids = {event_id(uid, w, e, r, n) for uid in ("u1", "u2") for w in ("a", "b")
           for e in ("started", "failed") for r in (0, 1) for n in (1, 2)}
    assert len(ids) == 32


def test_a_retry_attempt_starts_again_with_a_new_id() -> None:
    obj = tj(sub(events=["started"]))
    s1 = step(obj, {"phase": "Pending"}, running(attempts=1))
    s2 = step(obj, s1, {**s1, "phase": "Pending", "reason": "RetryBackoff"}, at(10))
    s3 = step(obj, s2, {**s2, **running(attempts=2)}, at(20))
    first, second = s3["webhookDeliveries"]
    assert first["id"] != second["id"]
    assert [first["data"]["attempts"], second["data"]["attempts"]] == [1, 2]


def test_a_manual_retry_round_fails_again_with_a_new_id() -> None:
    obj = tj(sub(events=["failed"]))
    s1 = step(obj, running(attempts=3), {"phase": "Failed", "attempts": 3})
    s2 = {**s1, "phase": "Pending", "manualRetries": 1}
    s3 = step(obj, s2, {**s2, "phase": "Failed", "attempts": 4}, at(60))
    first, second = s3["webhookDeliveries"]
    assert first["id"] != second["id"]


# --- progress --------------------------------------------------------------------------------------------------


def test_progress_is_throttled_by_the_interval() -> None:
    obj = tj(sub(events=["progress"], interval=30))
    s1 = step(obj, running(), running(10))
    assert types(s1) == ["transcodejob.progress"]
    assert only(s1)["data"]["percent"] == 10
    assert s1["webhooks"] == [{"name": "hook", "lastProgressTime": "2026-11-21T12:00:00Z",
                               "lastProgressPercent": 10.0, "progressEvents": 1}]
    assert outbox_update(obj, s1, {**s1, **running(20)}, at(29), CFG) == {}
    s2 = step(obj, s1, {**s1, **running(20)}, at(30))
    assert [d["data"]["percent"] for d in s2["webhookDeliveries"] if d["state"] != "Abandoned"] == [20]
    assert s2["webhooks"][0]["progressEvents"] == 2


def test_unchanged_progress_is_not_resent() -> None:
    obj = tj(sub(events=["progress"]))
    s1 = step(obj, running(), running(10))
    assert outbox_update(obj, s1, {**s1, **running(10)}, at(3600), CFG) == {}


def test_progress_needs_running_and_a_percent() -> None:
    obj = tj(sub(events=["progress"]))
    assert outbox_update(obj, running(), running(), NOW, CFG).get("webhookDeliveries") is None
    suspended = {"phase": "Suspended", "progress": {"stage": "Transcoding", "percent": 30, "updatedAt": UPDATED}}
    assert outbox_update(obj, suspended, suspended, NOW, CFG).get("webhookDeliveries") is None


def test_progress_waits_for_the_new_attempt_after_started() -> None:
    obj = tj(sub(events=["progress"]))
    stale = {"phase": "Pending", "attempts": 1,
             "progress": {"stage": "Transcoding", "percent": 40, "updatedAt": UPDATED}}
    s1 = step(obj, stale, {**stale, **running(40, attempts=2)})
    assert types(s1) == []
    s2 = step(obj, s1, {**s1, **running(2, attempts=2)}, at(5))
    assert types(s2) == ["transcodejob.progress"]


def test_a_newer_progress_event_supersedes_an_unsent_one() -> None:
    obj = tj(sub(events=["progress"], interval=5))
    s1 = step(obj, running(), running(10))
    s1 = {**s1, **record_result(s1, only(s1)["id"], BAD, at(1), CFG)}
    s2 = step(obj, s1, {**s1, **running(20)}, at(10))
    old, new = s2["webhookDeliveries"]
    assert old["state"] == "Abandoned" and "superseded" in old["lastError"] and "nextAttemptTime" not in old
    assert new["state"] == "Pending" and new["data"]["percent"] == 20
    assert old["id"] != new["id"]


# --- delivery results ------------------------------------------------------------------------------------------


def queued(*subs: Obj) -> Obj:
    return step(tj(*subs), {}, {"phase": "Queued"})


def test_success_marks_delivered() -> None:
    s = queued()
    entry_id = only(s)["id"]
    patch = record_result(s, entry_id, OK, at(1), CFG)
    entry = only(patch)
    assert entry["state"] == "Delivered" and entry["attempts"] == 1
    assert entry["responseStatus"] == 204 and entry["lastAttemptTime"] == "2026-11-21T12:00:01Z"
    assert "nextAttemptTime" not in entry and "lastError" not in entry
    # A late duplicate result changes nothing.
    assert record_result({**s, **patch}, entry_id, BAD, at(2), CFG) == {}
    assert record_result(s, "msg_unknown", OK, at(1), CFG) == {}


def test_failures_follow_the_schedule_then_fail() -> None:
    s = queued()
    entry_id = only(s)["id"]
    t = NOW
    waits = []
    for attempt in range(1, len(CFG.retry_schedule)):
        s = {**s, **record_result(s, entry_id, BAD, t, CFG)}
        entry = only(s)
        assert entry["attempts"] == attempt and entry["state"] == "Pending"
        assert entry["lastError"] == "HTTPError: receiver answered 500" and entry["responseStatus"] == 500
        nxt = dt.datetime.fromisoformat(entry["nextAttemptTime"].replace("Z", "+00:00"))
        waits.append(int((nxt - t).total_seconds()))
        t = nxt
    assert waits == [5, 300, 1800, 7200, 18000, 36000]
    s = {**s, **record_result(s, entry_id, BAD, t, CFG)}
    entry = only(s)
    assert entry["state"] == "Failed" and entry["attempts"] == len(CFG.retry_schedule)
    assert "nextAttemptTime" not in entry and due(s, at(10**6)) == []


def test_a_retry_that_succeeds_clears_the_error() -> None:
    s = queued()
    entry_id = only(s)["id"]
    s = {**s, **record_result(s, entry_id, BAD, NOW, CFG)}
    s = {**s, **record_result(s, entry_id, OK, at(5), CFG)}
    entry = only(s)
    assert entry["state"] == "Delivered" and entry["attempts"] == 2 and "lastError" not in entry


def test_record_failure_before_any_post() -> None:
    s = queued()
    entry = only(record_failure(s, only(s)["id"], "SecretNotFound", "secret media/hook-secret not found", NOW, CFG))
    assert entry["state"] == "Pending" and entry["attempts"] == 1
    assert "responseStatus" not in entry
    assert entry["lastError"] == "SecretNotFound: secret media/hook-secret not found"
    assert entry["nextAttemptTime"] == "2026-11-21T12:00:05Z"


def test_gone_disables_the_subscription_and_abandons_its_pending_entries() -> None:
    obj = tj(sub("a"), sub("b"))
    s1 = step(obj, {}, {"phase": "Queued"})
    s2 = step(obj, s1, {**s1, **running()}, at(1))
    a_queued = next(d for d in s2["webhookDeliveries"] if d["webhook"] == "a")
    s3 = {**s2, **record_result(s2, a_queued["id"], GONE, at(2), CFG)}
    assert s3["webhooks"] == [{"name": "a", "disabled": True, "disabledReason": "receiver answered 410 Gone"},
                              {"name": "b"}]
    states = {(d["webhook"], d["type"]): d["state"] for d in s3["webhookDeliveries"]}
    assert states == {("a", "transcodejob.queued"): "Abandoned", ("a", "transcodejob.started"): "Abandoned",
                      ("b", "transcodejob.queued"): "Pending", ("b", "transcodejob.started"): "Pending"}
    assert {d["webhook"] for d in due(s3, at(10))} == {"b"}
    # And nothing more is queued for it.
    s4 = step(obj, s3, {**s3, "phase": "Succeeded"}, at(3))
    assert [d["webhook"] for d in s4["webhookDeliveries"][4:]] == ["b"]


# --- trimming, due, body ---------------------------------------------------------------------------------------


def _entry(i: int, state: str) -> Obj:
    return {"id": f"msg_{i:024x}", "webhook": "hook", "type": "transcodejob.started",
            "eventTime": "2026-11-21T11:00:00Z", "state": state, "attempts": 1,
            **({"nextAttemptTime": "2026-11-21T13:00:00Z"} if state == "Pending" else {})}


def test_trimming_keeps_pending_and_the_newest_finished() -> None:
    old = [_entry(i, "Pending" if i % 10 == 0 else "Delivered") for i in range(40)]
    status: Obj = {"phase": "Pending", "webhooks": [{"name": "hook"}], "webhookDeliveries": old}
    kept = step(tj(), status, {**status, "phase": "Queued"})["webhookDeliveries"]
    pending = [d for d in kept if d["state"] == "Pending"]
    finished = [d for d in kept if d["state"] != "Pending"]
    assert len(pending) == 5 and len(finished) == CFG.keep_delivered
    assert finished == [d for d in old if d["state"] != "Pending"][-CFG.keep_delivered:]
    assert kept[-1]["type"] == "transcodejob.queued"


def test_trimming_never_exceeds_the_crd_limit() -> None:
    old = [_entry(i, "Pending") for i in range(MAX_DELIVERIES)]
    status: Obj = {"phase": "Pending", "webhooks": [{"name": "hook"}], "webhookDeliveries": old}
    kept = step(tj(), status, {**status, "phase": "Queued"})["webhookDeliveries"]
    assert len(kept) == MAX_DELIVERIES
    assert kept[0]["id"] == old[1]["id"] and kept[-1]["type"] == "transcodejob.queued"


def test_due_and_next_due() -> None:
    assert next_due({}) is None and due({}, NOW) == []
    late = {**_entry(1, "Pending"), "eventTime": "2026-11-21T11:30:00Z", "nextAttemptTime": "2026-11-21T12:00:00Z"}
    early = {**_entry(2, "Pending"), "eventTime": "2026-11-21T11:00:00Z", "nextAttemptTime": "2026-11-21T12:00:00Z"}
    later = {**_entry(3, "Pending"), "eventTime": "2026-11-21T11:10:00Z", "nextAttemptTime": "2026-11-21T12:05:00Z"}
    done = {**_entry(4, "Delivered"), "nextAttemptTime": "2026-11-21T11:00:00Z"}
    status: Obj = {"webhookDeliveries": [later, late, done, early]}
    assert [d["id"] for d in due(status, NOW)] == [early["id"], late["id"]]
    assert [d["id"] for d in due(status, at(300))] == [early["id"], later["id"], late["id"]]
    assert next_due(status) == NOW
    assert next_due({"webhookDeliveries": [later, done]}) == at(300)


def test_event_body_is_compact_sorted_standard_webhooks_json() -> None:
    entry = only(step(tj(), {"phase": "Pending"}, running(attempts=1)))
    body = event_body(entry)
    assert json.loads(body) == {"type": "transcodejob.started", "timestamp": "2026-11-21T12:00:00Z",
                                "data": entry["data"]}
    assert body == json.dumps(json.loads(body), separators=(",", ":"), sort_keys=True).encode()
    assert b" " not in body and body.startswith(b'{"data":')
    assert event_body(entry) == body  # what gets signed is the same on every attempt


# --- wire format -----------------------------------------------------------------------------------------------


def test_everything_written_round_trips_through_the_models() -> None:
    obj = tj(sub("a"), sub("b", events=["progress", "failed"], interval=5))
    TranscodeJobSpec.model_validate(obj["spec"])
    s1 = step(obj, {}, {"phase": "Queued"})
    s2 = step(obj, s1, {**s1, **running(attempts=1)}, at(1))
    s3 = step(obj, s2, {**s2, **running(12.5)}, at(10))
    s3 = {**s3, **record_result(s3, s3["webhookDeliveries"][0]["id"], OK, at(11), CFG)}
    s3 = {**s3, **record_result(s3, s3["webhookDeliveries"][1]["id"], BAD, at(12), CFG)}
    s3 = {**s3, **record_failure(s3, s3["webhookDeliveries"][2]["id"], "SecretNotFound", "x", at(13), CFG)}
    s3 = {**s3, **record_result(s3, s3["webhookDeliveries"][3]["id"], GONE, at(14), CFG)}
    s4 = step(obj, s3, {**s3, "phase": "Failed", "reason": "BadInput", "failureCategory": "BadInput"}, at(20))
    assert {d["state"] for d in s4["webhookDeliveries"]} == {"Delivered", "Pending", "Abandoned"}
    for d in s4["webhookDeliveries"]:
        assert WebhookDelivery.model_validate(d).wire() == d
    for w in s4["webhooks"]:
        assert WebhookState.model_validate(w).wire() == w
    TranscodeJobStatus.model_validate(s4)


def test_progress_ignores_the_placeholder_and_the_previous_attempt() -> None:
    obj = tj(sub(events=["progress"]))
    placeholder = {"phase": "Running", "progress": {"stage": "Pending", "percent": 0}}
    assert types(step(obj, {"phase": "Running"}, placeholder, at(1))) == []
    earlier = {"phase": "Running", "attemptHistory": [{"attempt": 2, "pod": "p2", "startTime": "2026-11-22T00:00:00Z"}],
               "progress": {"stage": "Transcoding", "percent": 40, "updatedAt": "2026-11-21T23:59:00Z"}}
    assert types(step(obj, {"phase": "Running"}, earlier, at(1))) == []


def test_a_job_admitted_at_first_sight_still_gets_its_queued_event() -> None:
    obj = tj()
    after = step(obj, {}, {"phase": "Pending", "attempts": 0, "reason": "Pending"})
    entry = only(after)
    assert entry["type"] == "transcodejob.queued" and entry["id"] == event_id("uid-1", "hook", "queued", 0, 0)
    assert entry["data"]["phase"] == "Queued" and "reason" not in entry["data"]
    assert outbox_update(obj, after, {**after, "phase": "Running", "attempts": 1}, at(5), CFG) != {}
    later = step(obj, after, {**after, "phase": "Running", "attempts": 1}, at(5))
    assert types(later) == ["transcodejob.queued", "transcodejob.started"]
