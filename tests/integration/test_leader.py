"""Two operator replicas and leader election on the local cluster: a standby takes over within 15 s of the
leader being SIGKILLed, takes over at once when the leader stops gracefully, and two replicas never lead at once.

The dev node agent runs pods on the host's network, where two replicas of the chart's Deployment would share
their ports. So the second replica is the chart's own Deployment copied under another name with other ports:
same pod template, image, ServiceAccount, RBAC and Lease.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from transkube_dev.cluster import ClusterState
from transkube_dev.kube import Kube, Obj

from .conftest import OPERATOR_NS, InstalledOperator, phase_of, tj_path, wait_for

LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{OPERATOR_NS}/leases/transkube-operator"
PODS = f"/api/v1/namespaces/{OPERATOR_NS}/pods"
SELECTOR = "app.kubernetes.io/component=operator"
TAKEOVER_LIMIT = 15.0  # the issue's bound
BUCKET = "transkube"


def operator_pods(kube: Kube) -> list[Obj]:
    return [p for p in kube.get(PODS, labelSelector=SELECTOR)["items"] if not p["metadata"].get("deletionTimestamp")]


def container_dir(cluster: ClusterState, pod: Obj) -> Path:
    meta = pod["metadata"]
    return Path(cluster.dir) / "agent" / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}" / \
        "containers" / "operator"


@dataclass(frozen=True)
class LeaderEvent:
    message: str
    identity: str
    monotonic: float
    pod: str


def leader_events(cluster: ClusterState, pods: list[Obj]) -> list[LeaderEvent]:
    """The `leader ...` JSON lines every incarnation of these pods logged, in monotonic order (one host, one
    monotonic clock for all processes)."""
    out = []
    for pod in pods:
        log = container_dir(cluster, pod) / "log"
        for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
            if not line.startswith("{") or '"identity"' not in line:
                continue
            try:
                raw = json.loads(line)
            except ValueError:
                continue
            if str(raw.get("message", "")).startswith("leader"):
                out.append(LeaderEvent(raw["message"], raw["identity"], float(raw["monotonic"]),
                                       pod["metadata"]["name"]))
    return sorted(out, key=lambda e: e.monotonic)


def holder(kube: Kube) -> str:
    return str((kube.get(LEASE).get("spec") or {}).get("holderIdentity") or "")


class LeaseRecorder:
    """Polls the Lease in the background: the history of (holder, acquireTime, renewTime, transitions)."""

    def __init__(self, kube: Kube):
        self.kube, self.stop = kube, threading.Event()
        self.seen: list[tuple[str, str | None, str | None, int]] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                spec = self.kube.get(LEASE)["spec"]
            except Exception:  # noqa: S112 (a missed sample is fine)
                continue
            entry = (spec.get("holderIdentity") or "", spec.get("acquireTime"), spec.get("renewTime"),
                     int(spec.get("leaseTransitions") or 0))
            if not self.seen or self.seen[-1] != entry:
                self.seen.append(entry)

    def __enter__(self) -> LeaseRecorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def wall(rfc3339: str) -> float:
    return dt.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def assert_never_two_leaders(events: list[LeaderEvent], ends: dict[str, float], since: float) -> None:
    """Leadership intervals from the replicas' own logs: from each `leader acquired` to the incarnation's end,
    the earliest of its `leader lost`, the moment the test SIGKILLed it, and the first line of the next
    incarnation in the same pod (a container runs one process at a time); the current leader runs until now.
    Every interval that reaches `since` or later must not overlap another."""
    now = time.monotonic()
    # An incarnation ends at SIGKILL (ends), or where the next incarnation in the same pod starts.
    incarnation_end = dict(ends)
    first_seen: dict[str, LeaderEvent] = {}
    for e in events:
        first_seen.setdefault(e.identity, e)
    for identity, first in first_seen.items():
        later = [f.monotonic for f in first_seen.values() if f.pod == first.pod and f.monotonic > first.monotonic]
        if later:
            incarnation_end[identity] = min(incarnation_end.get(identity, now), min(later))
    # One incarnation may lead several times: fenced (`leader lost`) and leading again once it renews.
    intervals: list[tuple[float, float, str]] = []
    open_since: dict[str, float] = {}
    for e in sorted(events, key=lambda x: x.monotonic):
        if e.message == "leader acquired":
            open_since.setdefault(e.identity, e.monotonic)
        elif e.message == "leader lost" and e.identity in open_since:
            intervals.append((open_since.pop(e.identity), e.monotonic, e.identity))
    still_open = []
    for identity, begun in open_since.items():
        if identity in incarnation_end:
            intervals.append((begun, incarnation_end[identity], identity))
        else:
            intervals.append((begun, now, identity))
            still_open.append(identity)
    intervals = sorted(i for i in intervals if i[1] >= since)
    for (_, end_a, a), (start_b, _, b) in itertools.pairwise(intervals):
        assert start_b > end_a, f"{b} acquired at {start_b:.3f} while {a} led until {end_a:.3f}: {intervals}"
    assert len(still_open) <= 1, intervals  # only the incarnation leading now may have no end


DEPLOYMENTS = f"/apis/apps/v1/namespaces/{OPERATOR_NS}/deployments"
SECOND = "transkube-operator-b"


def second_replica(chart_deployment: Obj, liveness_port: int, metrics_port: int) -> Obj:
    """The chart's operator Deployment, copied under another name with other ports: a second replica of the
    same pod template (same image, env, ServiceAccount and Lease) that doesn't collide on the host network."""
    template = json.loads(json.dumps(chart_deployment["spec"]["template"]))
    labels = {**template["metadata"]["labels"], "app.kubernetes.io/instance": "transkube-b"}
    template["metadata"] = {"labels": labels}
    container = template["spec"]["containers"][0]
    ports = {"TRANSKUBE_LIVENESS_PORT": liveness_port, "TRANSKUBE_METRICS_PORT": metrics_port}
    for env in container["env"]:
        if env["name"] in ports:
            env["value"] = str(ports[env["name"]])
    container["ports"] = [{"name": "healthz", "containerPort": liveness_port},
                          {"name": "metrics", "containerPort": metrics_port}]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": SECOND, "namespace": OPERATOR_NS, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": {
                "app.kubernetes.io/instance": "transkube-b", "app.kubernetes.io/component": "operator"}},
                "template": template}}


@pytest.fixture
def two_replicas(operator: InstalledOperator, kube: Kube) -> Iterator[None]:
    from transkube_dev import procs

    chart_deployment = kube.get(f"{DEPLOYMENTS}/transkube-operator")
    kube.create(DEPLOYMENTS, second_replica(chart_deployment, procs.free_port(), procs.free_port()))
    try:
        wait_for("two operator pods running", lambda: len([
            p for p in operator_pods(kube) if p["status"].get("phase") == "Running"]) == 2, timeout=120)
        yield
    finally:
        kube.delete(f"{DEPLOYMENTS}/{SECOND}", {"apiVersion": "v1", "kind": "DeleteOptions",
                                                "propagationPolicy": "Foreground"})
        wait_for("one operator pod", lambda: len(operator_pods(kube)) == 1, timeout=120)
        wait_for(f"{SECOND} gone", lambda: not any(d["metadata"]["name"] == SECOND
                                                  for d in kube.get(DEPLOYMENTS)["items"]), timeout=120)
        wait_for("the chart's replica leads", lambda: holder(kube).startswith(
            operator_pods(kube)[0]["metadata"]["name"] + "_"), timeout=60)


def leader_pod(kube: Kube) -> tuple[Obj, str]:
    identity = holder(kube)
    pod = next(p for p in operator_pods(kube) if identity.startswith(p["metadata"]["name"] + "_"))
    return pod, identity


def standing_by(cluster: ClusterState, pod: Obj, since: float) -> bool:
    """The pod's current process has come up and is waiting for the Lease."""
    return any(e.message == "leader election: standing by" and e.monotonic >= since
               for e in leader_events(cluster, [pod]))


def small_job(s3: Any, tmp_path: Path, name: str) -> Obj:
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc2=size=320x240:rate=25", "-t", "1", "-c:v", "libx264", "-preset", "ultrafast",
                    str(clip)], check=True, timeout=60)
    key = f"inputs/{uuid.uuid4().hex}/clip.mp4"
    s3.upload_file(str(clip), BUCKET, key)
    return {"apiVersion": "media.transkube.dev/v1alpha1", "kind": "TranscodeJob", "metadata": {"name": name},
            "spec": {"input": {"uri": f"s3://{BUCKET}/{key}"},
                     "outputs": [{"name": "web", "uri": f"s3://{BUCKET}/outputs/{uuid.uuid4().hex}/web.mp4",
                                  "container": "mp4", "video": {"codec": "h264", "resolution": "240p"}}]}}


def test_standby_takes_over_within_15s_of_a_sigkill_and_soon_on_sigterm(
        two_replicas: None, kube: Kube, cluster: ClusterState, tj_namespace: str, s3: Any, tmp_path: Path) -> None:
    since = time.monotonic()
    pods = operator_pods(kube)
    wait_for("a leader", lambda: any(holder(kube).startswith(p["metadata"]["name"] + "_") for p in pods), timeout=60)
    old_pod, old_identity = leader_pod(kube)
    standby = next(p for p in pods if p["metadata"]["name"] != old_pod["metadata"]["name"])
    wait_for("the standby waiting for the Lease", lambda: standing_by(cluster, standby, 0), timeout=60)
    transitions = int(kube.get(LEASE)["spec"].get("leaseTransitions") or 0)
    ends: dict[str, float] = {}

    with LeaseRecorder(kube) as lease:
        # SIGKILL: no release, no goodbye; the standby must wait the lease out.
        pid = int((container_dir(cluster, old_pod) / "pid").read_text())
        os.killpg(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        ends[old_identity] = killed_at
        new_identity = wait_for("another candidate leads", lambda: (h := holder(kube)) not in ("", old_identity)
                                and h, timeout=30, interval=0.1)
        # Usually the standby. The killed pod's container is restarted a second later and stands by too, and it
        # may win the race: both count the Lease as expired from their own first sight of its last renewal.
        new_pod = next(p for p in (standby, old_pod) if new_identity.startswith(p["metadata"]["name"] + "_"))
        acquired = next(e for e in leader_events(cluster, [new_pod])
                        if e.identity == new_identity and e.message == "leader acquired")
        takeover = acquired.monotonic - killed_at
        print(f"takeover after SIGKILL: {takeover:.2f} s")
        assert 0 < takeover < TAKEOVER_LIMIT

        # A job submitted after the takeover is reconciled by the new leader and succeeds.
        kube.create(tj_path(tj_namespace), small_job(s3, tmp_path, "after-takeover"))
        wait_for("after-takeover succeeded", lambda: phase_of(kube, tj_namespace, "after-takeover") == "Succeeded",
                 timeout=180)

        # The killed pod comes back (the node agent restarts the container) as a standby, and stays one (unless
        # that restarted container is the one that took over).
        if new_pod is standby:
            wait_for("the killed replica back as a standby", lambda: standing_by(cluster, old_pod, killed_at),
                     timeout=60)
        assert holder(kube) == new_identity

        # SIGTERM (the pod deleted): the leader releases the Lease after kopf stops; the other takes it at once.
        leader_now, _ = leader_pod(kube)
        kube.delete(f"{PODS}/{leader_now['metadata']['name']}")
        deleted_at = time.monotonic()
        # The restarted standby, or the Deployment's replacement pod, whichever asks first.
        third = wait_for("another replica leads", lambda: (h := holder(kube)) not in ("", new_identity) and h,
                         timeout=30, interval=0.1)
        handover = time.monotonic() - deleted_at
        print(f"handover after SIGTERM: {handover:.2f} s")
        assert handover < TAKEOVER_LIMIT
        time.sleep(1)

    released = [e for e in leader_events(cluster, [new_pod]) if e.message == "leader lost"]
    assert [e.identity for e in released] == [new_identity]

    # Never two leaders, from the replicas' own logs (every operator pod, the replacement included).
    every_pod = {p["metadata"]["uid"]: p for p in [old_pod, standby, *operator_pods(kube)]}
    assert_never_two_leaders(leader_events(cluster, list(every_pod.values())), ends, since)

    # ... and from the Lease's history: one transition per takeover. The killed leader's last renewal was at
    # least renewDeadline before the new leader's acquireTime, so it had fenced itself by then.
    spec = kube.get(LEASE)["spec"]
    assert int(spec["leaseTransitions"]) == transitions + 2, lease.seen
    holders = [h for h, *_ in lease.seen if h]  # "" between the release and the next acquire
    assert [h for i, h in enumerate(holders) if i == 0 or h != holders[i - 1]] == \
        [old_identity, new_identity, third], lease.seen
    last_old = max(wall(r) for h, _, r, _ in lease.seen if h == old_identity and r)
    new_acquire = next(wall(a) for h, a, _, _ in lease.seen if h == new_identity and a)
    election = json.loads(next(e["value"] for e in kube.get(
        f"/apis/apps/v1/namespaces/{OPERATOR_NS}/deployments/transkube-operator")["spec"]["template"]["spec"][
        "containers"][0]["env"] if e["name"] == "TRANSKUBE_LEADER_ELECTION"))
    assert new_acquire - last_old >= election["renewDeadlineSeconds"], lease.seen


# ---- chaos: the leader SIGKILLed while a batch of jobs runs -------------------------------------------------

CHAOS_JOBS = 200  # the issue's count: 1 s inputs through the 4-slot pool, about 4 minutes
CHAOS_KILLS = 3


def standby_ready(kube: Kube, cluster: ClusterState) -> bool:
    """Two operator pods, and the one not leading is (back) in its acquire loop."""
    pods, lead = operator_pods(kube), holder(kube)
    others = [p for p in pods if not lead.startswith(p["metadata"]["name"] + "_")]
    if len(pods) != 2 or len(others) != 1:
        return False
    events = [e for e in leader_events(cluster, others)
              if e.message in ("leader acquired", "leader election: standing by")]
    return bool(events) and events[-1].message == "leader election: standing by"


def kill_leader(kube: Kube, cluster: ClusterState) -> tuple[str, float]:
    """SIGKILLs the leader's process group; returns its identity and when."""
    pod, identity = leader_pod(kube)
    os.killpg(int((container_dir(cluster, pod) / "pid").read_text()), signal.SIGKILL)
    return identity, time.monotonic()


def assert_admission_order(tjs: list[Obj]) -> None:
    """Priority, then FIFO, across leaders: no job was admitted while a better one (a higher priority, or the same
    and enqueued earlier) had been waiting since before (well within aging's first step)."""
    def when(value: str) -> dt.datetime:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))

    jobs = [(o["metadata"]["name"], int(o["spec"].get("priority") or 0), when(o["status"]["queue"]["enqueuedTime"]),
             when(o["status"]["queue"]["admittedTime"])) for o in tjs]
    jumped = [(y, x) for y, py, ey, ay in jobs for x, px, ex, ax in jobs
              if (px, -ex.timestamp()) > (py, -ey.timestamp()) and ex < ay and ax > ay]
    assert not jumped, f"admitted ahead of a better waiting job (admitted, overtaken): {jumped}"


def test_leader_kills_lose_and_duplicate_nothing(two_replicas: None, kube: Kube, cluster: ClusterState,
                                                 tj_namespace: str, s3: Any, tmp_path: Path) -> None:
    """Leader kills: CHAOS_JOBS short jobs through the 4-slot `chaos` pool, each with webhooks, while the leader
    is SIGKILLed CHAOS_KILLS times at random moments. All succeed, each has exactly one Job (one pod per
    attempt), every webhook event is delivered, and the receiver gets each webhook-id exactly once."""
    import random

    from .test_webhooks import Receiver, create_secret, new_secret

    ns, secret = tj_namespace, new_secret()
    create_secret(kube, ns, "whsec", secret)
    receiver = Receiver()
    since = time.monotonic()
    pods = operator_pods(kube)
    wait_for("a leader", lambda: any(holder(kube).startswith(p["metadata"]["name"] + "_") for p in pods), timeout=60)
    template = small_job(s3, tmp_path, "template")
    names = [f"chaos-{i:03d}" for i in range(CHAOS_JOBS)]
    ends: dict[str, float] = {}
    takeovers: list[float] = []
    rng = random.Random()  # noqa: S311 (random moments, not secrets)
    try:
        for i, name in enumerate(names):
            body = json.loads(json.dumps(template))
            body["metadata"]["name"] = name
            body["spec"]["outputs"][0]["uri"] = f"s3://{BUCKET}/outputs/{uuid.uuid4().hex}/web.mp4"
            body["spec"] |= {"pool": "chaos", "priority": i % 3, "webhooks": [
                {"name": "hook", "url": f"{receiver.base}/hook", "events": ["queued", "started", "succeeded"],
                 "secretRef": {"name": "whsec", "key": "secret"}}]}
            kube.create(tj_path(ns), body)

        def finished() -> int:
            items = kube.get(tj_path(ns))["items"]
            return sum(1 for o in items if (o.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Cancelled"))

        deadline = time.monotonic() + 600
        for _ in range(CHAOS_KILLS):
            time.sleep(rng.uniform(2, 8))  # a random moment: admitting, creating Jobs, delivering, finishing
            if finished() == CHAOS_JOBS:
                break
            wait_for("a standby waiting", lambda: standby_ready(kube, cluster), timeout=60)
            old, killed_at = kill_leader(kube, cluster)
            ends[old] = killed_at
            wait_for("a new leader", lambda: holder(kube) not in ("", *ends), timeout=30, interval=0.1)
            takeovers.append(time.monotonic() - killed_at)
        print(f"{len(takeovers)} kills, takeovers (s): {[round(t, 1) for t in takeovers]}")
        assert takeovers and all(t < TAKEOVER_LIMIT for t in takeovers), takeovers

        wait_for("every chaos job finished", lambda: finished() == CHAOS_JOBS,
                 timeout=max(30.0, deadline - time.monotonic()), interval=1)
        items = {o["metadata"]["name"]: o for o in kube.get(tj_path(ns))["items"]}
        assert {n: items[n]["status"]["phase"] for n in names} == dict.fromkeys(names, "Succeeded")
        assert_admission_order([items[n] for n in names])

        # Exactly one Job per TranscodeJob (Job names are fixed per job, so a second would be a duplicate create),
        # and one worker pod per attempt.
        jobs = kube.get(f"/apis/batch/v1/namespaces/{ns}/jobs")["items"]
        by_owner: dict[str, list[str]] = {}
        for job in jobs:
            by_owner.setdefault(job["metadata"]["labels"]["transkube.dev/transcodejob"], []).append(
                job["metadata"]["name"])
        assert {n: by_owner.get(n) for n in names} == {n: [items[n]["status"]["jobName"]] for n in names}
        pods_of = kube.get(f"/api/v1/namespaces/{ns}/pods")["items"]
        per_job: dict[str, int] = {}
        for pod in pods_of:
            job_name = (pod["metadata"].get("labels") or {}).get("job-name")
            if job_name:
                per_job[job_name] = per_job.get(job_name, 0) + 1
        assert {n: per_job.get(items[n]["status"]["jobName"], 0) for n in names} == \
            {n: items[n]["status"]["attempts"] for n in names}

        # Every webhook event delivered, each webhook-id received exactly once.
        def outboxes() -> dict[str, list[Obj]]:
            return {o["metadata"]["name"]: (o.get("status") or {}).get("webhookDeliveries") or []
                    for o in kube.get(tj_path(ns))["items"]}

        def unsettled() -> dict[str, list[tuple[str, str]]]:
            return {name: [(e["type"], e["state"]) for e in entries] for name, entries in outboxes().items()
                    if len(entries) != 3 or any(e["state"] != "Delivered" for e in entries)}

        settle_by = time.monotonic() + 60
        while unsettled() and time.monotonic() < settle_by:
            time.sleep(1)
        assert unsettled() == {}
        expected = sorted(e["id"] for entries in outboxes().values() for e in entries)
        requests = receiver.requests("/hook")
        received = Counter(r.headers["webhook-id"] for r in requests)
        assert sorted(received) == expected
        # Once each, except at-least-once's one unavoidable case: a POST the receiver answered just before the
        # leader was SIGKILLed, before it could record the answer. The new leader sends it again, with the same
        # webhook-id (receivers dedupe on it). Anything else sent twice is a bug.
        resent = {i: [r.at for r in requests if r.headers["webhook-id"] == i] for i, n in received.items() if n > 1}
        kills = sorted(ends.values())
        assert all(len(at) == 2 and any(k - 2.0 <= at[0] <= k for k in kills) for at in resent.values()), \
            (resent, kills)
        print(f"{len(received)} webhook ids, {len(resent)} resent after a kill")
    finally:
        receiver.close()
    every_pod = {p["metadata"]["uid"]: p for p in [*pods, *operator_pods(kube)]}
    assert_never_two_leaders(leader_events(cluster, list(every_pod.values())), ends, since)
