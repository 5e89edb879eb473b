"""TranscodeJobs the kubectl / GitOps way, on the real cluster with the Helm-installed operator: status follows
kstatus through a job's whole life, the operator never writes spec (so `kubectl apply` and `kubectl diff` stay
clean after it finished), and `kubectl explain` shows the model's descriptions."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from transkube_dev.kube import Kube, Obj

from .conftest import InstalledOperator, tj_path

BUCKET = "transkube"
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def clip_uri(tmp_path_factory: pytest.TempPathFactory, s3: Any) -> str:
    clip = tmp_path_factory.mktemp("gitops") / "clip.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                    "-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", str(clip)],
                   check=True)
    key = f"inputs/{uuid.uuid4().hex}/clip.mp4"
    s3.upload_file(str(clip), BUCKET, key)
    return f"s3://{BUCKET}/{key}"


def manifest(name: str, namespace: str, input_uri: str) -> Obj:
    prefix = f"s3://{BUCKET}/outputs/{uuid.uuid4().hex}"
    return {"apiVersion": "media.transkube.dev/v1alpha1", "kind": "TranscodeJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"input": {"uri": input_uri},
                     # `type` is written out: the API server defaults it, and client-side apply sends lists whole
                     # (JSON merge patch), so without it a re-apply says "configured" (a no-op patch, generation
                     # unchanged) although nobody else wrote spec.
                     "outputs": [{"name": "small", "type": "file", "uri": f"{prefix}/small.mp4", "container": "mp4",
                                  "video": {"codec": "h264", "height": 180, "crf": 30},
                                  "audio": {"codec": "aac", "bitrate": "64k"}}]}}


def conditions(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def test_status_follows_kstatus_and_spec_stays_the_users(operator: InstalledOperator, kube: Kube, kubectl: Kubectl,
                                                         tj_namespace: str, clip_uri: str, tmp_path: Path) -> None:
    ns, name = tj_namespace, "gitops"
    path = tmp_path / "tj.yaml"
    path.write_text(yaml.safe_dump(manifest(name, ns, clip_uri)))
    created = kubectl("apply", "-f", str(path))
    assert "created" in created.stdout

    # Every version of the object from creation to the end, through a watch (no change is missed).
    snapshots: list[Obj] = [kube.get(tj_path(ns, name))]
    version = snapshots[0]["metadata"]["resourceVersion"]
    while (snapshots[-1].get("status") or {}).get("phase") not in ("Succeeded", "Failed", "Cancelled"):
        for event in kube.watch(tj_path(ns), version, timeout_seconds=60, fieldSelector=f"metadata.name={name}"):
            if event["type"] in ("ADDED", "MODIFIED"):
                snapshots.append(event["object"])
                version = event["object"]["metadata"]["resourceVersion"]
                if (event["object"].get("status") or {}).get("phase") in ("Succeeded", "Failed", "Cancelled"):
                    break
            elif event["type"] == "BOOKMARK":
                version = event["object"]["metadata"]["resourceVersion"]
            elif event["type"] == "ERROR":
                raise AssertionError(event)

    phases_seen: list[str] = []
    ready_before: Obj | None = None
    for snap in snapshots:
        status = snap.get("status") or {}
        phase, conds = status.get("phase"), conditions(snap)
        if phase and (not phases_seen or phases_seen[-1] != phase):
            phases_seen.append(phase)
        both = [t for t in ("Reconciling", "Stalled") if conds.get(t, {}).get("status") == "True"]
        assert len(both) < 2, f"Reconciling and Stalled both True: {conds}"
        if phase in ("Pending", "Running"):
            assert conds["Reconciling"]["status"] == "True", (phase, conds)
            assert conds["Ready"]["status"] == "False" and conds["Succeeded"]["status"] == "Unknown", conds
        for cond in conds.values():
            assert cond.get("observedGeneration") == status.get("observedGeneration"), cond
        ready = conds.get("Ready")
        if ready and ready_before:
            flipped = ready["status"] != ready_before["status"]
            moved = ready["lastTransitionTime"] != ready_before["lastTransitionTime"]
            assert flipped == moved, f"Ready {ready_before} -> {ready}"
        ready_before = ready or ready_before

    assert "Running" in phases_seen and phases_seen[-1] == "Succeeded", phases_seen
    final = snapshots[-1]
    conds = conditions(final)
    assert conds["Ready"]["status"] == "True" and conds["Succeeded"]["status"] == "True", conds
    assert "Reconciling" not in conds and "Stalled" not in conds, conds
    generation = final["metadata"]["generation"]
    assert final["status"]["observedGeneration"] == generation
    assert all(c["observedGeneration"] == generation for c in conds.values())

    # The operator never wrote spec: re-applying the same manifest is a no-op and there is nothing to diff.
    again = kubectl("apply", "-f", str(path))
    assert again.stdout.strip().endswith("unchanged"), again.stdout
    diff = kubectl("diff", "-f", str(path), check=False)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    live = json.loads(kubectl("get", "tj", name, "-n", ns, "--show-managed-fields", "-o", "json").stdout)
    assert live["metadata"]["generation"] == generation
    spec_managers = {m["manager"] for m in live["metadata"]["managedFields"]
                     if "f:spec" in (m.get("fieldsV1") or {})}
    assert spec_managers == {"kubectl-client-side-apply"}, live["metadata"]["managedFields"]
    others = [m for m in live["metadata"]["managedFields"] if m["manager"] != "kubectl-client-side-apply"]
    assert any(m.get("subresource") == "status" for m in others), others  # the operator's status writes


def test_kubectl_explain_shows_the_models_descriptions(operator: InstalledOperator, kubectl: Kubectl) -> None:
    out = kubectl("explain", "tj.spec.outputs").stdout
    assert "KIND:       TranscodeJob" in out or "KIND:     TranscodeJob" in out, out
    assert "What to produce: one or more outputs, all from one decode of the input." in out
    for field in ("name", "uri", "container", "video", "audio", "preset"):
        assert f"\n  {field}\t" in out, field
    assert "Name of this output, unique within the job" in out
    nested = kubectl("explain", "tj.spec.outputs.video").stdout
    assert "DESCRIPTION:" in nested and "FIELDS:" in nested
