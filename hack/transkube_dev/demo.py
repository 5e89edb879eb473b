"""`make demo` after the cluster is up: install the chart, make and upload a sample video, apply a
TranscodeJob, follow its progress live, and print where the outputs are with an ffprobe summary.

TRANSKUBE_DEMO_SECONDS sets the sample's length (default 20; tests/integration/test_docs.py uses a short one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import yaml

from . import procs, tools
from .cluster import ClusterState

NAMESPACE = "demo"
NAME = "sample"


def main(cluster_dir: str) -> int:
    state = ClusterState.load(Path(cluster_dir))
    assert state.s3 is not None
    kubectl_bin, helm_bin = tools.ensure_kubectl_helm()

    def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
        return subprocess.run([str(kubectl_bin), f"--kubeconfig={state.kubeconfig}", *args], input=stdin,
                              check=check, capture_output=True, text=True).stdout

    # Helm installs crds/ only on first install; applying them first keeps re-runs and upgrades current.
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(tools.REPO_DIR / "charts" / "transkube" / "crds"))
    shim_port = procs.free_port()
    print("== installing the chart (CRDs, RBAC, operator, shim, presets) into transkube-system", flush=True)
    subprocess.run([str(helm_bin), f"--kubeconfig={state.kubeconfig}", "upgrade", "--install", "transkube",
                    str(tools.REPO_DIR / "charts" / "transkube"), "-n", "transkube-system", "--create-namespace",
                    "--set", f"storage.endpoint={state.s3.endpoint}",
                    # One replica: the dev node agent runs pods on the host's network, where replicas share ports.
                    "--set", "operator.replicas=1",
                    "--set", f"operator.livenessPort={procs.free_port()}",
                    "--set", f"operator.metricsPort={procs.free_port()}",
                    "--set", f"shim.port={shim_port}",
                    # Pods run as host processes here: a second shim replica would collide on shim.port.
                    "--set", "shim.replicas=1",
                    "--set", "worker.progressIntervalSeconds=1", "--wait", "--timeout", "120s"],
                   check=True, stdout=subprocess.DEVNULL)
    print(kubectl("get", "deploy,pods", "-n", "transkube-system"))

    kubectl("create", "namespace", NAMESPACE, check=False)
    kubectl("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "transkube-storage", "namespace": NAMESPACE},
              "stringData": {"AWS_ACCESS_KEY_ID": state.s3.access_key, "AWS_SECRET_ACCESS_KEY": state.s3.secret_key}}
    kubectl("apply", "-f", "-", stdin=json.dumps(secret))
    kubectl("delete", "tj", NAME, "-n", NAMESPACE, "--ignore-not-found", "--wait=true")

    s3 = boto3.client("s3", endpoint_url=state.s3.endpoint, aws_access_key_id=state.s3.access_key,
                      aws_secret_access_key=state.s3.secret_key, region_name=state.s3.region)
    manifest = yaml.safe_load((tools.REPO_DIR / "examples" / "transcodejob.yaml").read_text())
    input_key = manifest["spec"]["input"]["uri"].split("/", 3)[3]
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample.mp4"
        seconds = os.environ.get("TRANSKUBE_DEMO_SECONDS") or "20"
        print(f"== making a {seconds} s 1280x720 sample with ffmpeg and uploading it", flush=True)
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
                        "-f", "lavfi", "-i", "sine=frequency=330:sample_rate=48000", "-t", seconds,
                        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", str(sample)],
                       check=True)
        s3.upload_file(str(sample), state.s3.bucket, input_key)
    print(f"   s3://{state.s3.bucket}/{input_key}")

    print(f"== kubectl apply -f examples/transcodejob.yaml -n {NAMESPACE}", flush=True)
    print(kubectl("apply", "-n", NAMESPACE, "-f", str(tools.REPO_DIR / "examples" / "transcodejob.yaml")), end="")
    status = follow(kubectl)
    print()
    print(kubectl("get", "tj", "-n", NAMESPACE, "-o", "wide"))
    if status.get("phase") != "Succeeded":
        print(f"job ended {status.get('phase')}: {status.get('reason')}: {status.get('message')}")
        print(kubectl("describe", "tj", NAME, "-n", NAMESPACE))
        return 1
    facts = status.get("input", {})
    print(f"input: {facts.get('width')}x{facts.get('height')} {facts.get('videoCodec')}/{facts.get('audioCodec')}, "
          f"{facts.get('durationSeconds')} s")
    with tempfile.TemporaryDirectory() as tmp:
        for out in status["outputs"]:
            local = Path(tmp) / out["name"]
            s3.download_file(state.s3.bucket, out["uri"].split("/", 3)[3], str(local))
            probe = subprocess.run(
                ["ffprobe", "-v", "error", "-show_entries",
                 "format=duration,size,format_name:stream=codec_name,width,height", "-of", "compact=p=0", str(local)],
                check=True, capture_output=True, text=True).stdout.strip().replace("\n", " | ")
            print(f"output {out['name']}: {out['uri']}\n   {out.get('checksum')}\n   ffprobe: {probe}")
    print(f"\nREST shim: http://127.0.0.1:{shim_port}/docs (API keys: `transkube-shim new-key`, see docs/shim.md)")
    print("\nEvents:")
    print(kubectl("get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={NAME}",
                  "--sort-by=.lastTimestamp"))
    return 0


def follow(kubectl: Any) -> dict[str, Any]:
    """A live progress bar from status.progress until the job ends."""
    deadline = time.monotonic() + 600
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = json.loads(kubectl("get", "tj", NAME, "-n", NAMESPACE, "-o", "json")).get("status") or {}
        progress = status.get("progress") or {}
        percent = float(progress.get("percent") or 0)
        bar = "#" * int(percent / 2.5)
        extra = " ".join(f"{k}={progress[k]}" for k in ("fps", "speed", "eta") if progress.get(k) is not None)
        line = f"\r{status.get('phase', '-'):<9} [{bar:<40}] {percent:5.1f}% {progress.get('stage', ''):<11} {extra}"
        sys.stdout.write(line.ljust(110))
        sys.stdout.flush()
        if status.get("phase") in ("Succeeded", "Failed", "Cancelled"):
            break
        time.sleep(0.5)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
