"""The operator runtime's pure parts: the work queue, the slim caches, request labels."""

from __future__ import annotations

import asyncio

import pytest
from transkube_api.constants import LABEL_JOB
from transkube_operator import cache
from transkube_operator.k8s import request_labels
from transkube_operator.workqueue import WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_keys_coalesce_and_never_run_twice_at_once() -> None:
    async def run() -> None:
        q: WorkQueue[str] = WorkQueue()
        for _ in range(5):
            q.add("a")
        q.add("b")
        assert len(q) == 2
        key, _ = await q.get()
        assert key == "a"
        q.add("a")  # an event while "a" is in flight: not handed to a second worker
        nxt, _ = await q.get()
        assert nxt == "b" and len(q) == 0
        q.done("a")  # ...but processed again afterwards
        again, _ = await q.get()
        assert again == "a"
        q.done("a")
        q.done("b")
        assert len(q) == 0
    asyncio.run(run())


def test_an_urgent_key_goes_first_even_when_already_queued() -> None:
    async def run() -> None:
        q: WorkQueue[str] = WorkQueue()
        for key in ("old-1", "old-2", "seen"):
            q.add(key)
        q.add("new", urgent=True)  # a job nobody acted on yet, behind a restart's resync of every job
        q.add("seen", urgent=True)
        assert [(await q.get())[0] for _ in range(4)] == ["seen", "new", "old-1", "old-2"]
    asyncio.run(run())


def test_timers_keep_the_earliest_due_time_per_key() -> None:
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(clock=clock)
    q.add_after("a", 10)
    q.add_after("a", 30)  # later: ignored
    q.add_after("b", 5)
    q.add_after("a", 2)  # earlier: wins
    assert q.delayed == 2
    assert q.pop_due() == pytest.approx(2)
    clock.now += 2
    assert q.pop_due() == pytest.approx(3)
    assert len(q) == 1
    clock.now += 10
    assert q.pop_due() is None
    assert len(q) == 2 and q.delayed == 0
    q.add_after("c", 1)
    q.discard_timer("c")
    clock.now += 5
    assert q.pop_due() is None and len(q) == 2


def test_retry_backs_off_per_key_and_forget_resets() -> None:
    q: WorkQueue[str] = WorkQueue(clock=Clock())
    assert [q.retry("a") for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert q.retry("b") == 0.5
    q.forget("a")
    assert q.retry("a") == 0.5
    for _ in range(20):
        delay = q.retry("c")
    assert delay == 60.0


JOB = {
    "apiVersion": "batch/v1", "kind": "Job",
    "metadata": {"name": "j1", "namespace": "ns", "uid": "u", "resourceVersion": "42",
                 "labels": {LABEL_JOB: "tj"}, "managedFields": [{"big": "x" * 1000}],
                 "ownerReferences": [{"uid": "owner"}]},
    "spec": {"suspend": True, "template": {"spec": {"containers": [{"name": "worker", "env": ["x"] * 50}]}}},
    "status": {"active": 1},
}


def test_slim_projections_keep_what_decisions_read() -> None:
    slim = cache.slim_job(JOB)
    assert slim["spec"] == {"suspend": True} and slim["status"] == {"active": 1}
    assert "managedFields" not in slim["metadata"] and slim["metadata"]["ownerReferences"] == [{"uid": "owner"}]
    assert cache.owner_key(JOB) == ("ns", "tj")
    assert cache.owner_key({"metadata": {"namespace": "ns"}}) is None
    pod = {"metadata": {"name": "p", "namespace": "ns", "labels": {"job-name": "j1"}},
           "spec": {"nodeName": "n1", "containers": [{"name": "worker"}]},
           "status": {"phase": "Running", "containerStatuses": [{"name": "worker"}], "podIPs": ["x"]}}
    assert cache.slim_pod(pod) == {"metadata": {"name": "p", "namespace": "ns", "labels": {"job-name": "j1"}},
                                   "spec": {"nodeName": "n1"},
                                   "status": {"phase": "Running", "containerStatuses": [{"name": "worker"}]}}
    tj = {"metadata": {"name": "t", "namespace": "ns", "uid": "u", "creationTimestamp": "2026-01-01T00:00:00Z",
                       "annotations": {"a": "b"}},
          "spec": {"priority": 3, "outputs": [{}], "suspend": False},
          "status": {"phase": "Queued", "queue": {"pool": "cpu"}, "attemptHistory": [{}]}}
    entry = cache.slim_queue_entry(tj)
    assert entry["spec"] == {"priority": 3, "suspend": False}
    assert entry["status"] == {"phase": "Queued", "queue": {"pool": "cpu"}}


def _v(name: str, rv: str, **extra: object) -> dict[str, object]:
    return {"metadata": {"name": name, "resourceVersion": rv}, **extra}


def test_own_writes_overlay_the_watch_until_it_catches_up() -> None:
    watched = [_v("a", "10", spec={"suspend": True})]
    written = {"a": _v("a", "12", spec={"suspend": False}), "b": _v("b", "11")}
    merged = cache.merge_children(watched, written)
    assert [(o["metadata"]["name"], o["metadata"]["resourceVersion"]) for o in merged] == [("a", "12"), ("b", "11")]
    assert cache.stale_writes(watched, written) == []
    assert cache.stale_writes([_v("a", "12"), _v("b", "15")], written) == ["a", "b"]
    assert cache.newest(_v("a", "9"), _v("a", "8"))["metadata"]["resourceVersion"] == "9"  # type: ignore[index]
    assert cache.newest(None, _v("a", "1")) is not None


def test_admission_sees_its_unwritten_decisions() -> None:
    entry = {"metadata": {"name": "t"}, "status": {"phase": "Queued", "queue": {"pool": "cpu", "position": 2}}}
    pending = {"admittedTime": "2026-01-01T00:00:00.000001Z", "position": None, "reason": None}
    view = cache.queue_view(entry, pending)
    assert view["status"]["queue"] == {"pool": "cpu", "admittedTime": "2026-01-01T00:00:00.000001Z"}
    assert not cache.decision_written(entry, pending)
    assert cache.decision_written({"status": {"queue": {"admittedTime": "x"}}}, pending)
    assert cache.decision_written({"status": {"phase": "Cancelled"}}, pending)
    assert cache.decision_written(entry, {"position": 2})
    assert not cache.decision_written(entry, {"position": 1, "reason": "PoolCapacity"})


@pytest.mark.parametrize(("method", "url", "expected"), [
    ("GET", "https://h:6443/apis/batch/v1/namespaces/ns/jobs", ("list", "jobs")),
    ("GET", "https://h:6443/apis/batch/v1/namespaces/ns/jobs/j1", ("get", "jobs")),
    ("POST", "https://h:6443/apis/batch/v1/namespaces/ns/jobs", ("create", "jobs")),
    ("PATCH", "https://h/apis/media.transkube.dev/v1alpha1/namespaces/ns/transcodejobs/t/status",
     ("patch", "transcodejobs/status")),
    ("GET", "https://h/api/v1/namespaces/ns", ("get", "namespaces")),
    ("GET", "https://h/api/v1/namespaces", ("list", "namespaces")),
    ("POST", "https://h/api/v1/namespaces/ns/events", ("create", "events")),
    ("DELETE", "https://h/api/v1/namespaces/ns/pods/p", ("delete", "pods")),
    ("GET", "https://h/apis/media.transkube.dev/v1alpha1/transcodepresets/web", ("get", "transcodepresets")),
    ("PUT", "https://h/apis/coordination.k8s.io/v1/namespaces/s/leases/l", ("update", "leases")),
])
def test_request_labels_name_requests_as_the_api_server_does(method: str, url: str,
                                                              expected: tuple[str, str]) -> None:
    assert request_labels(method, url) == expected


def test_hold_keeps_workers_off_a_key_and_release_requeues_it() -> None:
    async def run() -> None:
        q: WorkQueue[str] = WorkQueue()
        q.add("a")
        assert q.hold("a") and q.busy("a") and len(q) == 0  # queued "a" waits for the release
        q.add("a")
        q.add("b")
        key, _ = await q.get()
        assert key == "b" and not q.hold("b")  # a worker has "b"
        q.done("a")  # release
        again, _ = await q.get()
        assert again == "a"
    asyncio.run(run())


def test_bodies_keep_compact_json_and_take_only_newer_copies_of_the_same_object() -> None:
    from transkube_operator.cache import Bodies

    def body(uid: str, rv: str, phase: str) -> dict[str, object]:
        return {"metadata": {"name": "a", "namespace": "n", "uid": uid, "resourceVersion": rv,
                             "managedFields": [{"manager": "kubectl"}]}, "status": {"phase": phase}}

    bodies = Bodies()
    bodies.put(("n", "a"), body("u1", "10", "Queued"))
    assert ("n", "a") in bodies and len(bodies) == 1
    assert bodies.identity(("n", "a")) == ("u1", 10)
    got = bodies.get(("n", "a"))
    assert got is not None and got["status"] == {"phase": "Queued"}
    assert "managedFields" not in got["metadata"]
    got["status"]["phase"] = "changed"  # a decoded copy: the kept body does not change with it
    assert bodies.get(("n", "a"))["status"] == {"phase": "Queued"}  # type: ignore[index]
    bodies.put_newer(("n", "a"), body("u1", "9", "Stale"))
    bodies.put_newer(("n", "a"), body("u2", "99", "OtherObject"))
    assert bodies.get(("n", "a"))["status"] == {"phase": "Queued"}  # type: ignore[index]
    bodies.put_newer(("n", "a"), body("u1", "11", "Pending"))
    assert bodies.identity(("n", "a")) == ("u1", 11)
    bodies.pop(("n", "a"))
    assert bodies.get(("n", "a")) is None and bodies.identity(("n", "a")) is None


def _child(name: str, owner: str, rv: int, ns: str = "ns") -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv), "labels": {LABEL_JOB: owner}}}


def test_informer_store_groups_children_by_owner_and_reports_what_a_relist_changed() -> None:
    from transkube_operator.informer import Store

    store = Store()
    assert store.upsert(_child("a-1", "a", 1)) == ("ns", "a")
    assert store.upsert(_child("a-2", "a", 2)) == ("ns", "a")
    assert store.upsert({"metadata": {"name": "x", "namespace": "ns"}}) is None  # not one of ours
    store.upsert(_child("b-1", "b", 3))
    store.upsert(_child("c-1", "c", 4, ns="other"))
    assert sorted(o["metadata"]["name"] for o in store.children(("ns", "a"))) == ["a-1", "a-2"]
    assert len(store) == 4
    assert store.delete(_child("a-1", "a", 5)) == ("ns", "a")
    assert [o["metadata"]["name"] for o in store.children(("ns", "a"))] == ["a-2"]
    # A relist of namespace "ns" (after a 410): a-2 unchanged, b-1 newer, d-1 new, and "other" untouched.
    changed = store.replace([_child("a-2", "a", 2), _child("b-1", "b", 6), _child("d-1", "d", 7)], "ns")
    assert changed == {("ns", "b"), ("ns", "d")}
    assert store.children(("other", "c")) and len(store) == 4
    # A cluster-wide relist drops what is gone everywhere.
    assert store.replace([_child("d-1", "d", 7)]) == {("ns", "a"), ("ns", "b"), ("other", "c")}
    assert store.children(("ns", "a")) == [] and len(store) == 1
    store.delete(_child("d-1", "d", 8))
    assert len(store) == 0 and store.delete(_child("d-1", "d", 8)) == ("ns", "d")


def test_informer_parses_each_watch_line_into_type_and_object() -> None:
    from transkube_operator.informer import parse_events

    lines = ['{"type":"ADDED","object":{"metadata":{"name":"j"}}}', b'{"type":"BOOKMARK","object":{}}']
    assert list(parse_events(lines)) == [("ADDED", {"metadata": {"name": "j"}}), ("BOOKMARK", {})]


def test_a_packed_transcodejob_keeps_compact_json_and_the_admission_entry() -> None:
    tj = {"apiVersion": "media.transkube.dev/v1alpha1", "kind": "TranscodeJob",
          "metadata": {"name": "a", "namespace": "ns", "uid": "u1", "resourceVersion": "42",
                       "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [{"manager": "kubectl"}]},
          "spec": {"priority": 3, "input": {"uri": "s3://b/k"}}, "status": {"phase": "Queued"}}
    item = cache.pack(tj)
    assert (item.key, item.uid, item.resource_version, item.phase) == (("ns", "a"), "u1", 42, "Queued")
    assert item.entry == cache.slim_queue_entry(tj)
    bodies = cache.Bodies()
    bodies.put_packed(item)
    assert bodies.get(("ns", "a")) == cache.strip(tj) and list(bodies) == [("ns", "a")]
    assert cache.preset_entry({"metadata": {"name": "p", "generation": 2, "uid": "x"}, "spec": {"type": "file"}}) \
        == {"metadata": {"name": "p", "generation": 2}, "spec": {"type": "file"}}


def test_named_sink_keeps_the_newest_object_by_name() -> None:
    from transkube_operator.informer import Named

    named = Named()
    named.listed("", [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}])
    named.event("MODIFIED", {"metadata": {"name": "a"}, "spec": {"x": 1}})
    named.event("DELETED", {"metadata": {"name": "b"}})
    assert named == {"a": {"metadata": {"name": "a"}, "spec": {"x": 1}}}
    named.listed("", [{"metadata": {"name": "c"}}])
    assert list(named) == ["c"]


def test_watch_namespaces_must_be_names_not_patterns(capsys: pytest.CaptureFixture[str]) -> None:
    from transkube_operator.main import main

    with pytest.raises(SystemExit) as exc:
        main(["--namespace", "media", "--namespace", "team-*", "--check"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--namespace (operator.watchNamespaces)" in err and "'team-*'" in err
    assert "'media'" not in err
    assert main(["--namespace", "media", "--check"]) == 0
    from transkube_operator import handlers

    handlers.WATCH_NAMESPACES.clear()  # main() set it; nothing else in the unit tests reads it
