"""The `transkube` CLI (its installed console scripts, as subprocesses) against the real local cluster, MinIO and
an in-process shim: upload, submit, watch, get/list, outputs --download with checksum verification, suspend /
resume / cancel, a failing job, and `kubectl transcode` as a kubectl plugin."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transkube_dev import tools
from transkube_dev.cluster import ClusterState
from transkube_dev.kube import Kube

from .conftest import tj_path, wait_for
from .shim_fixtures import *  # noqa: F403 (fixtures)
from .shim_fixtures import BUCKET, Tenant

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s lavfi clip, high-entropy and nearly lossless so it is > 10 MiB: three 5 MiB multipart parts."""
    path = tmp_path_factory.mktemp("cli-media") / "clip.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                    "-t", "3", "-vf", "noise=alls=60:allf=t", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0",
                    "-c:a", "aac", "-shortest", str(path)], check=True, timeout=120)
    assert path.stat().st_size > 10 * MIB
    return path


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TRANSKUBE_API_", "AWS_")) and k != "KUBECONFIG"}
    kubectl, _ = tools.ensure_kubectl_helm()
    env["PATH"] = os.pathsep.join([str(BIN), str(Path(kubectl).parent), env.get("PATH", "")])
    env["HOME"] = env.get("HOME", "/tmp")
    return env


def direct_env(cluster: ClusterState) -> dict[str, str]:
    return base_env() | cluster.env()


def shim_env(tenant: Tenant) -> dict[str, str]:
    """Only the shim's URL and key: no kubeconfig, no storage credentials."""
    return base_env() | {"TRANSKUBE_API_URL": tenant.url, "TRANSKUBE_API_KEY": tenant.key,
                         "KUBECONFIG": "/nonexistent"}


def cli(env: dict[str, str], *args: str, timeout: float = 120, program: str = "transkube"
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([program, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def output_flag(name: str = "web", prefix: str = "cli") -> str:
    """Through the shim, prefix starts with the tenant's name: the shim confines each tenant to its own prefix."""
    key = f"{prefix}/{uuid.uuid4().hex}/{name}.mp4"
    return (f"name={name},uri=s3://{BUCKET}/{key},container=mp4,vcodec=h264,height=240,crf=30,preset=ultrafast,"
            "acodec=aac,abitrate=64k")


def check_download(env: dict[str, str], name: str, ns_args: list[str], tmp: Path, status: dict[str, Any]) -> None:
    shown = ok(cli(env, "outputs", name, *ns_args))
    (out,) = status["outputs"]
    assert out["uri"] in shown and out["checksum"] in shown and str(out["sizeBytes"]) in shown
    result = cli(env, "outputs", name, *ns_args, "--download", str(tmp))
    ok(result)
    assert "sha256 ok" in result.stderr, result.stderr
    path = tmp / Path(out["uri"]).name
    data = path.read_bytes()
    assert len(data) == out["sizeBytes"]
    assert out["checksum"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert data[4:8] == b"ftyp"  # an MP4


def test_direct_upload_submit_watch_download_and_kubectl_plugin(
        cluster: ClusterState, tj_namespace: str, kube: Kube, s3: Any, clip: Path, tmp_path: Path) -> None:
    env, ns = direct_env(cluster), ["-n", tj_namespace]
    dest = f"s3://{BUCKET}/cli/{uuid.uuid4().hex}/clip.mp4"
    result = cli(env, "upload", str(clip), dest, "--part-size", "5")
    assert ok(result).strip() == dest
    assert "upload clip.mp4" in result.stderr and "100.0%" in result.stderr
    head = s3.head_object(Bucket=BUCKET, Key=dest.removeprefix(f"s3://{BUCKET}/"))
    assert head["ContentLength"] == clip.stat().st_size
    parts = -(-clip.stat().st_size // (5 * MIB))
    assert parts >= 3 and head["ETag"].strip('"').endswith(f"-{parts}"), head["ETag"]  # multipart, 5 MiB parts

    name = ok(cli(env, "submit", *ns, "--input", dest, "--output", output_flag(), "--name", "cli-direct",
                  "--priority", "5")).strip()
    assert name == "cli-direct"
    cr = kube.get(tj_path(tj_namespace, name))
    assert cr["spec"]["outputs"][0]["video"] == {"codec": "h264", "height": 240, "crf": 30, "preset": "ultrafast"}
    assert cr["spec"]["priority"] == 5

    watched = cli(env, "watch", name, *ns, timeout=300)
    assert watched.returncode == 0, watched.stderr
    assert f"transcodejob {name} Succeeded" in watched.stdout
    assert f"{name}  " in watched.stderr  # progress lines (not a terminal: one line per change)

    status = kube.get(tj_path(tj_namespace, name))["status"]
    assert status["phase"] == "Succeeded"
    check_download(env, name, ns, tmp_path, status)

    described = ok(cli(env, "get", name, *ns))
    assert "Phase:      Succeeded" in described and dest in described
    listed = ok(cli(env, "list", *ns))
    assert listed.splitlines()[0].split() == ["NAME", "PHASE", "STAGE", "PROGRESS", "ETA", "REASON", "AGE"]
    assert any(line.split()[:4] == [name, "Succeeded", "Done", "100.0"] for line in listed.splitlines())

    # The same binary as a kubectl plugin: `kubectl transcode ...` finds kubectl-transcode on PATH.
    plugin = subprocess.run(["kubectl", "transcode", "list", "-n", tj_namespace, "-o", "name"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert plugin.returncode == 0, plugin.stderr
    assert plugin.stdout.split() == [name]


def test_direct_suspend_resume_cancel_and_a_rejected_spec(
        cluster: ClusterState, tj_namespace: str, kube: Kube) -> None:
    env, ns = direct_env(cluster), ["-n", tj_namespace]
    name = ok(cli(env, "submit", *ns, "--suspend", "--input", f"s3://{BUCKET}/cli/never.mp4",
                  "--output", output_flag())).strip()
    assert name.startswith("never-")
    wait_for("Suspended", lambda: (kube.get(tj_path(tj_namespace, name)).get("status") or {}).get("phase")
             == "Suspended")
    assert "resumed" in ok(cli(env, "resume", name, *ns))
    assert kube.get(tj_path(tj_namespace, name))["spec"]["suspend"] is False
    assert "suspended" in ok(cli(env, "suspend", name, *ns))
    assert kube.get(tj_path(tj_namespace, name))["spec"]["suspend"] is True
    assert "cancelled" in ok(cli(env, "cancel", name, *ns))
    watched = cli(env, "watch", name, *ns, timeout=120)
    assert watched.returncode == 3, (watched.stdout, watched.stderr)
    assert f"transcodejob {name} Cancelled" in watched.stderr

    # Validated before anything is sent: the field is named and nothing is created.
    before = len(kube.get(tj_path(tj_namespace))["items"])
    bad = cli(env, "submit", *ns, "--input", f"s3://{BUCKET}/cli/a.mp4",
              "--output", f"uri=s3://{BUCKET}/cli/b.webm,container=webm,vcodec=h264")
    assert bad.returncode == 2 and "outputs[0]" in bad.stderr and "webm cannot carry" in bad.stderr
    assert len(kube.get(tj_path(tj_namespace))["items"]) == before
    missing = cli(env, "watch", "no-such-job", *ns)
    assert missing.returncode == 4 and "not found" in missing.stderr


def test_watch_exits_non_zero_with_the_reason_when_the_input_is_missing_then_retry_succeeds(
        cluster: ClusterState, tj_namespace: str, kube: Kube, s3: Any, clip: Path) -> None:
    env, ns = direct_env(cluster), ["-n", tj_namespace]
    key = f"cli/{uuid.uuid4().hex}/missing.mp4"
    name = ok(cli(env, "submit", *ns, "--input", f"s3://{BUCKET}/{key}", "--output", output_flag(),
                  "--retry-limit", "0")).strip()
    watched = cli(env, "watch", name, *ns, timeout=300)
    assert watched.returncode == 1, (watched.stdout, watched.stderr)
    assert "InputNotFound" in watched.stderr
    assert f"transcodejob {name} Failed: InputNotFound" in watched.stderr
    category = kube.get(tj_path(tj_namespace, name))["status"]["failureCategory"]
    listed = ok(cli(env, "list", *ns))
    assert any(line.split()[:2] == [name, "Failed"] and f"{category}/InputNotFound" in line
               for line in listed.splitlines()), listed

    # The input shows up; `retry` runs the same job again (spec.manualRetry + 1) and --watch follows it to the end.
    s3.upload_file(str(clip), BUCKET, key)
    retried = cli(env, "retry", name, *ns, "--watch", timeout=300)
    assert retried.returncode == 0, (retried.stdout, retried.stderr)
    assert f"transcodejob {name} retry requested (manualRetry 1)" in retried.stdout
    assert f"transcodejob {name} Succeeded" in retried.stdout
    cr = kube.get(tj_path(tj_namespace, name))
    assert cr["spec"]["manualRetry"] == 1 and cr["status"]["manualRetries"] == 1
    described = ok(cli(env, "get", name, *ns))
    assert "Phase:      Succeeded" in described and "(1 manual retries)" in described
    history = described.splitlines()[described.splitlines().index("History:") + 1:]
    assert history[0].split()[:2] == ["ATTEMPT", "ROUND"]
    assert any(row.split()[1] == "0" and "InputNotFound" in row for row in history[1:]), described
    again = cli(env, "retry", name, *ns)
    assert again.returncode == 5 and "only failed jobs can be retried" in again.stderr


def test_through_the_shim_upload_submit_watch_download(
        tenant: Callable[..., Tenant], kube: Kube, tmp_path: Path, clip: Path) -> None:
    t = tenant()
    env = shim_env(t)
    result = cli(env, "upload", str(clip), "--part-size", "5")
    uri = ok(result).strip()
    assert uri.startswith(f"s3://{BUCKET}/uploads/{t.name}/") and uri.endswith("clip.mp4"), uri
    assert "100.0%" in result.stderr

    # A destination or a name make no sense through the shim: it chooses both; clear errors, nothing sent.
    assert cli(env, "upload", str(clip), f"s3://{BUCKET}/x.mp4").returncode == 2
    named = cli(env, "submit", "--name", "x", "--input", uri, "--output", output_flag(prefix=f"{t.name}/cli"))
    assert named.returncode == 2 and "--name" in named.stderr

    name = ok(cli(env, "submit", "--input", uri, "--output", output_flag(prefix=f"{t.name}/cli"))).strip()
    watched = cli(env, "watch", name, timeout=300)
    assert watched.returncode == 0, watched.stderr
    assert f"transcodejob {name} Succeeded" in watched.stdout
    status = kube.get(tj_path(t.namespace, name))["status"]
    assert status["phase"] == "Succeeded" and status["input"]["sizeBytes"] == clip.stat().st_size
    check_download(env, name, [], tmp_path, status)
    assert name in ok(cli(env, "list", "-o", "name")).split()

    # pause/cancel through the shim; the SSE watch ends with Cancelled.
    held = ok(cli(env, "submit", "--suspend", "--input", uri, "--output", output_flag(prefix=f"{t.name}/cli"))).strip()
    assert "suspended" in ok(cli(env, "suspend", held))
    assert "cancelled" in ok(cli(env, "cancel", held))
    cancelled = cli(env, "watch", held, timeout=120)
    assert cancelled.returncode == 3 and "Cancelled" in cancelled.stderr


def test_watch_through_the_shim_reports_input_not_found_and_retry_waits_for_the_new_attempt(
        tenant: Callable[..., Tenant], kube: Kube) -> None:
    t = tenant()
    env = shim_env(t)
    name = ok(cli(env, "submit", "--input", t.uri(f"cli/{uuid.uuid4().hex}.mp4"),
                  "--output", output_flag(prefix=f"{t.name}/cli"), "--retry-limit", "0")).strip()
    watched = cli(env, "watch", name, timeout=300)
    assert watched.returncode == 1 and "InputNotFound" in watched.stderr, (watched.stdout, watched.stderr)
    # Retried with the input still missing: it fails again, and the watch ends at the NEW failure, not at the
    # Failed phase the job still has while the retry is pending.
    retried = cli(env, "retry", name, "--watch", timeout=300)
    assert retried.returncode == 1 and "InputNotFound" in retried.stderr, (retried.stdout, retried.stderr)
    status = kube.get(tj_path(t.namespace, name))["status"]
    assert status["phase"] == "Failed" and status["manualRetries"] == 1
    assert {a.get("round", 0) for a in status["attemptHistory"]} >= {0, 1}, status["attemptHistory"]
    pending = cli(env, "retry", name)  # the second retry counts too; a third at once would be refused
    assert pending.returncode == 0 and "(manualRetry 2)" in pending.stdout
    refused = cli(env, "retry", name)
    assert refused.returncode == 5 and ("retry_pending" in refused.stderr or "not_failed" in refused.stderr)


def submit_all(env: dict[str, str], *argvs: list[str]) -> list[str]:
    return [ok(cli(env, "submit", *argv)).strip() for argv in argvs]


def watch_all(env: dict[str, str], names: list[str], ns_args: list[str]) -> None:
    for name in names:
        watched = cli(env, "watch", name, *ns_args, timeout=300)
        assert watched.returncode == 0, (name, watched.stdout, watched.stderr)
        assert f"transcodejob {name} Succeeded: 1 output(s) written" in watched.stdout, watched.stdout


def check_defaults_and_presets(kube: Kube, s3: Any, namespace: str, jobs: dict[str, str], input_uri: str) -> None:
    """The one-liner's output got a name and a URI next to the input; preset outputs were resolved by the
    operator (status.resolvedOutputs): the hls preset keeps its type and streaming, a bitrate override drops
    the preset's crf."""
    stem = input_uri.removesuffix(".mp4")
    one = kube.get(tj_path(namespace, jobs["one-liner"]))
    (out,) = one["spec"]["outputs"]
    assert (out["name"], out["uri"]) == ("mp4-240p", f"{stem}-mp4-240p.mp4"), out
    assert one["status"]["outputs"][0]["uri"] == out["uri"]
    s3.head_object(Bucket=BUCKET, Key=out["uri"].removeprefix(f"s3://{BUCKET}/"))

    web = kube.get(tj_path(namespace, jobs["bitrate"]))
    (out,) = web["spec"]["outputs"]
    assert out["preset"] == "web-720p" and out["uri"] == f"{stem}-web-720p.mp4" and "container" not in out
    (resolved,) = web["status"]["resolvedOutputs"]
    assert resolved["container"] == "mp4" and "preset" not in resolved
    assert resolved["video"]["bitrate"] == "300k" and "crf" not in resolved["video"], resolved
    assert resolved["video"]["resolution"] == "720p" and resolved["video"]["preset"] == "ultrafast"
    assert [p["preset"] for p in web["status"]["presets"]] == ["web-720p"]

    if "hls" in jobs:
        hls = kube.get(tj_path(namespace, jobs["hls"]))
        (out,) = hls["spec"]["outputs"]
        assert out["preset"] == "hls-default" and out["uri"] == f"{stem}-hls-default/" and "streaming" not in out
        (resolved,) = hls["status"]["resolvedOutputs"]
        assert resolved["type"] == "hls" and resolved["streaming"]["autoLadder"] == {"maxRenditions": 4}, resolved
        (written,) = hls["status"]["outputs"]
        assert written["type"] == "hls" and "master.m3u8" in written["files"], written
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=out["uri"].removeprefix(f"s3://{BUCKET}/"))
        assert {o["Key"].rsplit("/", 1)[1] for o in listed.get("Contents", [])} == set(written["files"])


def test_defaults_and_presets_directly_and_through_the_shim(
        cluster: ClusterState, tj_namespace: str, kube: Kube, s3: Any, clip: Path,
        tenant: Callable[..., Tenant]) -> None:
    """README's one-liner (`--output container=mp4,height=...`, no name, no URI) and presets sent as `preset:`,
    both ways."""
    env, ns = direct_env(cluster), ["-n", tj_namespace]
    input_uri = f"s3://{BUCKET}/cli/{uuid.uuid4().hex}/clip.mp4"
    s3.upload_file(str(clip), BUCKET, input_uri.removeprefix(f"s3://{BUCKET}/"))
    direct = dict(zip(("one-liner", "bitrate", "hls"), submit_all(
        env, [*ns, "--input", input_uri, "--output", "container=mp4,height=240"],
        [*ns, "--input", input_uri, "--preset", "web-720p", "--output", "vbitrate=300k,preset=ultrafast"],
        [*ns, "--input", input_uri, "--preset", "hls-default"]), strict=True))

    t = tenant()
    shim = shim_env(t)
    uploaded = ok(cli(shim, "upload", str(clip), "--part-size", "5")).strip()
    via_shim = dict(zip(("one-liner", "bitrate"), submit_all(
        shim, ["--input", uploaded, "--output", "container=mp4,height=240"],
        ["--input", uploaded, "--preset", "web-720p", "--output", "vbitrate=300k,preset=ultrafast"]), strict=True))

    watch_all(env, list(direct.values()), ns)
    watch_all(shim, list(via_shim.values()), [])
    check_defaults_and_presets(kube, s3, tj_namespace, direct, input_uri)
    check_defaults_and_presets(kube, s3, t.namespace, via_shim, uploaded)
