"""Two replicas of the chart's shim side by side (issue 12, "Highly available"): a client following a job's
events on one replica that is SIGKILLed mid-run resumes on the other with Last-Event-ID and hears how the job
ended, with no gap; both replicas answer reads alike. The second replica is the chart's own Deployment copied
under another name and port (the dev node agent runs pods on the host network, where two would share a port).
Bounded: about a minute."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from transkube_dev.cluster import ClusterState
from transkube_dev.kube import Kube, Obj

from .conftest import OPERATOR_NS, InstalledOperator, chart_tenant_input, wait_for
from .test_shim_ha import sse_events

pytestmark = pytest.mark.integration
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{OPERATOR_NS}/deployments"
PODS = f"/api/v1/namespaces/{OPERATOR_NS}/pods"
SECOND = "transkube-shim-b"
TERMINAL = ("completed", "failed", "cancelled", "deleted")


def second_shim(chart_deployment: Obj, port: int) -> Obj:
    """The chart's shim Deployment under another name and port: the same pod template (image, env, Secrets,
    ServiceAccount, probes) as a second replica."""
    template = json.loads(json.dumps(chart_deployment["spec"]["template"]))
    labels = {**template["metadata"]["labels"], "app.kubernetes.io/instance": "transkube-b"}
    template["metadata"] = {"labels": labels}
    container = template["spec"]["containers"][0]
    for env in container["env"]:
        if env["name"] == "TRANSKUBE_SHIM_PORT":
            env["value"] = str(port)
    container["ports"] = [{"name": "http", "containerPort": port}]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": SECOND, "namespace": OPERATOR_NS, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": {
                "app.kubernetes.io/instance": "transkube-b", "app.kubernetes.io/component": "shim"}},
                "template": template}}


def shim_pod(kube: Kube, port: int) -> Obj | None:
    """The running shim pod serving on `port`."""
    for pod in kube.get(PODS, labelSelector="app.kubernetes.io/component=shim")["items"]:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        if env.get("TRANSKUBE_SHIM_PORT") == str(port) and not pod["metadata"].get("deletionTimestamp") \
                and pod["status"].get("phase") == "Running":
            return dict(pod)
    return None


def ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def two_shims(operator: InstalledOperator, kube: Kube) -> Iterator[tuple[int, int]]:
    from transkube_dev import procs

    port = procs.free_port()
    kube.create(DEPLOYMENTS, second_shim(kube.get(f"{DEPLOYMENTS}/transkube-shim"), port))
    try:
        wait_for("both shim replicas ready", lambda: ready(operator.shim_port) and ready(port), timeout=120)
        yield operator.shim_port, port
    finally:
        kube.delete(f"{DEPLOYMENTS}/{SECOND}", {"apiVersion": "v1", "kind": "DeleteOptions",
                                                "propagationPolicy": "Foreground"})
        wait_for(f"{SECOND} gone", lambda: not any(d["metadata"]["name"] == SECOND
                                                  for d in kube.get(DEPLOYMENTS)["items"]), timeout=120)
        wait_for("the chart's shim ready", lambda: ready(operator.shim_port), timeout=120)


def test_an_event_stream_moves_to_the_other_replica_when_one_is_killed(
        two_shims: tuple[int, int], operator: InstalledOperator, kube: Kube, cluster: ClusterState, s3: Any,
        tmp_path: Path) -> None:
    assert cluster.s3 is not None
    port_a, port_b = two_shims
    session = requests.Session()
    session.headers["X-API-Key"] = operator.shim_api_key

    def url(port: int, path: str) -> str:
        return f"http://127.0.0.1:{port}/api/v1{path}"

    key = chart_tenant_input(kube, cluster, s3, operator.shim_tenant, tmp_path / "clip.mp4", "replicas",
                             size="640x360", seconds=8)
    spec = {"input": {"uri": f"s3://{cluster.s3.bucket}/{key}"},
            "outputs": [{"name": "web", "uri": f"s3://{cluster.s3.bucket}/{key}.out.mp4", "container": "mp4",
                         "video": {"codec": "h264", "resolution": "360p", "preset": "medium"},
                         "audio": {"codec": "none"}}]}
    created = session.post(url(port_a, "/jobs"), json=spec, timeout=30)
    assert created.status_code == 201, created.text
    name = created.json()["name"]

    # Follow the job on replica A until it runs.
    seen_a: list[tuple[str, dict[str, Any], str | None]] = []
    running = threading.Event()

    def follow_a() -> None:
        try:
            with session.get(url(port_a, f"/jobs/{name}/events"), stream=True, timeout=(10, 60)) as resp:
                for event in sse_events(resp):
                    seen_a.append(event)
                    kind, data, _ = event
                    if kind in ("stage", "progress") or (kind == "phase" and data.get("to") == "Running") or (
                            kind == "state" and (data.get("status") or {}).get("phase") == "Running"):
                        running.set()  # the worker is at it
        except requests.RequestException:
            pass  # the replica died under us

    reader = threading.Thread(target=follow_a, daemon=True)
    reader.start()
    assert running.wait(90), seen_a
    last_id = next(e[2] for e in reversed(seen_a) if e[2])

    # SIGKILL replica A's process, as a node failure would; the client's stream breaks.
    pod_a = shim_pod(kube, port_a)
    assert pod_a is not None
    meta = pod_a["metadata"]
    pid_file = Path(cluster.dir) / "agent" / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}" / \
        "containers" / "shim" / "pid"
    os.killpg(int(pid_file.read_text()), signal.SIGKILL)
    reader.join(30)
    assert not reader.is_alive()
    assert not any(e[0] in TERMINAL for e in seen_a), seen_a  # it broke before the end, as intended
    time.sleep(1)  # events happen meanwhile, on nobody's stream

    # The client resumes on replica B with the last id it got: it hears the state it missed, then the end.
    seen_b: list[tuple[str, dict[str, Any], str | None]] = []
    with session.get(url(port_b, f"/jobs/{name}/events"), stream=True, timeout=(10, 90),
                     headers={"Last-Event-ID": last_id}) as resp:
        assert resp.status_code == 200, resp.text
        for event in sse_events(resp):
            seen_b.append(event)
            if event[0] in TERMINAL:
                break
    assert seen_b and seen_b[-1][0] == "completed", seen_b
    assert seen_b[-1][1]["status"]["phase"] == "Succeeded"
    ids = [int(e[2]) for e in seen_b if e[2]]
    assert ids == sorted(ids) and ids[0] > int(last_id), (last_id, seen_b)  # nothing older than what A sent

    # Replica A comes back (the Deployment restarts it) and answers reads as B does.
    wait_for("replica A back", lambda: ready(port_a), timeout=120)

    def alike() -> bool:
        views = [session.get(url(p, f"/jobs/{name}"), timeout=10) for p in (port_a, port_b)]
        return all(v.status_code == 200 for v in views) and views[0].json()["status"]["phase"] == "Succeeded" \
            and [(v.json()["resourceVersion"], v.json()["status"]) for v in views].count(
                (views[1].json()["resourceVersion"], views[1].json()["status"])) == 2

    wait_for("both replicas answer alike", alike, timeout=60)
