"""Memory per cached TranscodeJob in the shim's watch cache: the object as the API server sends it, against the
slim projection the cache keeps (transkube_shim.cache.slim). No cluster needed: N realistic objects (applied
with kubectl, so with its last-applied annotation; with the operator's kopf annotations and finalizer, and
managedFields for kubectl, the operator and the worker) are parsed from JSON one by one, as a watch delivers
them, and tracemalloc counts what the held objects take.

    .venv/bin/python bench/shim_cache_memory.py [--jobs 1000]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from transkube_shim.cache import slim

REPO = Path(__file__).resolve().parents[1]
Obj = dict[str, Any]


def _fields(node: Any) -> Any:
    """A managedFields fieldsV1 tree mirroring node's keys, as the API server writes it."""
    if isinstance(node, dict):
        return {f"f:{k}": _fields(v) for k, v in node.items()}
    return {}


def realistic(i: int, finished: bool) -> Obj:
    manifest = yaml.safe_load((REPO / "examples" / "transcodejob.yaml").read_text())
    name = f"catalog-{i:06d}"
    manifest["metadata"] = {"name": name, "namespace": "media"}
    spec = manifest["spec"]
    spec["input"]["uri"] = f"s3://transkube/catalog/{name}.mp4"
    for out in spec["outputs"]:
        out["uri"] = out["uri"].replace("sample", name)
    created, admitted = "2026-12-01T10:00:00Z", "2026-12-01T10:00:01Z"
    status: Obj = {"observedGeneration": 1, "phase": "Queued", "attempts": 0,
                   "queue": {"pool": "cpu", "priority": 0, "position": i + 1, "enqueuedAt": created},
                   "conditions": [{"type": "Admitted", "status": "False", "reason": "PoolFull",
                                   "message": "waiting for a slot in pool cpu", "lastTransitionTime": admitted}]}
    if finished:
        status.update({
            "phase": "Succeeded", "attempts": 1, "jobName": f"{name}-1", "startTime": admitted,
            "completionTime": "2026-12-01T10:02:00Z",
            "progress": {"stage": "Done", "percent": 100, "fps": 61.2, "speed": 2.4},
            "input": {"durationSeconds": 120.0, "width": 1920, "height": 1080, "videoCodec": "h264",
                      "audioCodec": "aac", "sizeBytes": 48_000_000},
            "outputs": [{"name": o["name"], "uri": o["uri"], "sizeBytes": 12_000_000,
                         "checksum": "sha256:" + "ab" * 32} for o in spec["outputs"]],
            "conditions": [{"type": "Complete", "status": "True", "reason": "Succeeded", "message": "all outputs "
                            "written", "lastTransitionTime": "2026-12-01T10:02:00Z"}]})
    applied = json.dumps(manifest, separators=(",", ":"))
    metadata = {
        "name": name, "namespace": "media", "uid": f"0b6c1f2e-{i:04x}-4c1e-9d7a-3f5b2a1c9e8d",
        "resourceVersion": str(100_000 + i), "generation": 1, "creationTimestamp": created,
        "labels": {"transkube.dev/tenant": "media", "transkube.dev/pool": "cpu", "transkube.dev/priority": "0"},
        "finalizers": ["transkube.dev/finalizer"],
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied + "\n",
                        "transkube.dev/last-handled-configuration": json.dumps({"spec": spec}),
                        "transkube.dev/reconcile": json.dumps({"started": admitted, "purpose": "create",
                                                               "retries": 0, "success": True})},
        "managedFields": [
            {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": manifest["apiVersion"],
             "time": created, "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-"
                                                           "configuration": {}}}, "f:spec": _fields(spec)}},
            {"manager": "transkube-operator", "operation": "Update", "apiVersion": manifest["apiVersion"],
             "time": admitted, "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:annotations": {"f:transkube.dev/last-handled-configuration": {},
                                                           "f:transkube.dev/reconcile": {}},
                                         "f:finalizers": {".": {}, 'v:"transkube.dev/finalizer"': {}},
                                         "f:labels": {"f:transkube.dev/pool": {}}}}},
            {"manager": "transkube-operator", "operation": "Update", "apiVersion": manifest["apiVersion"],
             "time": admitted, "fieldsType": "FieldsV1", "subresource": "status",
             "fieldsV1": {"f:status": _fields(status)}},
        ]}
    if finished:
        metadata["managedFields"].append(
            {"manager": "transkube-worker", "operation": "Update", "apiVersion": manifest["apiVersion"],
             "time": "2026-12-01T10:02:00Z", "fieldsType": "FieldsV1", "subresource": "status",
             "fieldsV1": {"f:status": {"f:progress": _fields(status["progress"]),
                                       "f:input": _fields(status["input"])}}})
    return {**manifest, "metadata": metadata, "status": status}


def held_bytes(raws: list[bytes], keep: Callable[[Obj], Obj]) -> int:
    """Bytes tracemalloc attributes to the kept objects, each parsed from its own JSON (no sharing)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = [keep(json.loads(raw)) for raw in raws]
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(held) == len(raws)
    return after - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    n = parser.parse_args().jobs
    print(f"{'profile':<10} {'wire bytes/job':>15} {'full bytes/job':>15} {'slim bytes/job':>15} {'ratio':>7}")
    for profile, finished in (("queued", False), ("succeeded", True)):
        raws = [json.dumps(realistic(i, finished)).encode() for i in range(n)]
        full = held_bytes(raws, copy.copy)
        small = held_bytes(raws, slim)
        wire = sum(map(len, raws)) / n
        print(f"{profile:<10} {wire:>15.0f} {full / n:>15.0f} {small / n:>15.0f} {small / full:>7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
