"""The CLI's pure parts: flags -> spec, progress rendering, status -> exit code, SSE parsing, argument parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from transkube_api.presets import resolve_output
from transkube_cli import main as cli_main
from transkube_cli import render, sse
from transkube_cli.main import main, parser
from transkube_cli.render import Exit
from transkube_cli.spec import (
    SpecError,
    build_submit,
    default_output_name,
    field_path,
    fill_defaults,
    load_manifest,
    name_prefix,
    parse_output,
    retry_patch,
    retry_precondition,
    retry_refusal,
    split_s3_uri,
)

IN = "s3://transkube/inputs/My_Clip.mp4"


# ---- flags -> spec ----------------------------------------------------------------------------------------

def test_parse_output_maps_keys_and_fills_default_codecs() -> None:
    out = parse_output("name=web,uri=s3://b1/o/web.mp4,container=mp4,height=720,crf=23,abitrate=96k")
    assert out == {"name": "web", "uri": "s3://b1/o/web.mp4", "container": "mp4",
                   "video": {"height": "720", "crf": "23", "codec": "h264"},
                   "audio": {"bitrate": "96k", "codec": "aac"}}
    webm = parse_output("uri=s3://b1/o/a.webm,container=webm,crf=30")
    assert webm["video"]["codec"] == "vp9" and "name" not in webm  # named by fill_defaults
    assert parse_output("uri=s3://b1/o/x.mkv,container=mkv,vcodec=h265")["video"] == {"codec": "h265"}
    hdr = parse_output("uri=s3://b1/o/x.mkv,container=mkv,vcodec=h265,dynamic-range=hdr,pixel-format=yuv420p10le")
    assert hdr["video"] == {"codec": "h265", "dynamicRange": "hdr", "pixelFormat": "yuv420p10le"}


@pytest.mark.parametrize(("text", "fragment"), [
    ("name=web,color=blue", "unknown key 'color'"),
    ("name=web,crf", "expected key=value"),
    ("name=web,crf=", "expected key=value"),
    ("name=a,name=b", "name given twice"),
])
def test_parse_output_rejects_bad_items_naming_the_output(text: str, fragment: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_output(text, 1)
    assert fragment in str(exc.value) and exc.value.field == "--output #2"


def test_names_are_dns_labels() -> None:
    assert default_output_name("s3://b1/o/Web 720p.mp4") == "web-720p"
    assert default_output_name("s3://b1/o/___.mp4", 2) == "out-3"
    assert default_output_name("s3://b1/hls/") == "hls"
    assert name_prefix(IN) == "my-clip-"
    assert name_prefix("s3://b1/x/___") == "tj-"
    assert len(name_prefix("s3://b1/" + "a" * 300 + ".mp4")) <= 41


def test_split_s3_uri() -> None:
    assert split_s3_uri("s3://bucket/a/b.mp4") == ("bucket", "a/b.mp4")
    with pytest.raises(SpecError):
        split_s3_uri("http://bucket/a")


def test_build_submit_from_flags_validates_with_the_models() -> None:
    req = build_submit(input_uri=IN, outputs=["name=web,uri=s3://transkube/o/web.mp4,container=mp4,height=240,"
                                              "crf=30,preset=ultrafast"],
                       namespace="media", accelerator="nvidia", fallback="cpu", retry_limit=0, deadline_seconds=600)
    manifest = req.manifest()
    assert manifest["apiVersion"] == "media.transkube.dev/v1alpha1" and manifest["kind"] == "TranscodeJob"
    assert manifest["metadata"] == {"generateName": "my-clip-", "namespace": "media"}
    spec = manifest["spec"]
    assert spec["outputs"][0]["video"] == {"codec": "h264", "height": 240, "crf": 30, "preset": "ultrafast"}
    assert spec["accelerator"]["type"] == "nvidia" and spec["accelerator"]["fallback"] == "cpu"
    assert spec["retryLimit"] == 0 and spec["deadlineSeconds"] == 600
    named = build_submit(input_uri=IN, outputs=["uri=s3://transkube/o/a.mp3,container=mp3"], name="job-1")
    assert named.manifest()["metadata"] == {"name": "job-1"}


@pytest.mark.parametrize(("outputs", "field", "fragment"), [
    (["uri=s3://transkube/o/w.mp4,container=mp4,height=721"], "outputs[0].video.height", "multiple of 2"),
    (["uri=s3://transkube/o/w.mp4,container=mp4,crf=20,bitrate=2M"], "outputs[0].video", "mutually exclusive"),
    (["uri=s3://transkube/o/w.webm,container=webm,vcodec=h264"], "outputs[0]", "webm cannot carry"),
    (["uri=s3://transkube/o/w.mp4,container=mp4", "uri=s3://transkube/o/w.mp4,container=mp4,name=b"], None,
     "unique"),
    (["uri=s3://transkube/o/w.mp4,container=avi"], "outputs[0].container", "Input should be"),
    (["uri=not-s3,container=mp4"], "outputs[0].uri", "must be s3://bucket/key"),
])
def test_build_submit_names_the_field_the_models_reject(outputs: list[str], field: str | None, fragment: str) -> None:
    with pytest.raises(SpecError) as exc:
        build_submit(input_uri=IN, outputs=outputs)
    assert exc.value.field == field and fragment in exc.value.detail, (exc.value.field, exc.value.detail)


def test_build_submit_needs_input_and_outputs_and_a_dns_name() -> None:
    with pytest.raises(SpecError) as exc:
        build_submit(outputs=["uri=s3://transkube/o/w.mp4,container=mp4"])
    assert exc.value.field == "input"
    with pytest.raises(SpecError) as exc:
        build_submit(input_uri=IN)
    assert exc.value.field == "outputs"
    with pytest.raises(SpecError) as exc:
        build_submit(input_uri=IN, outputs=["uri=s3://transkube/o/w.mp4,container=mp4"], name="Bad_Name")
    assert exc.value.field == "metadata.name"


def test_manifest_whole_or_spec_only_and_flags_win() -> None:
    spec = {"input": {"uri": "s3://transkube/in/a.mp4"},
            "outputs": [{"name": "a", "uri": "s3://transkube/o/a.mp4", "container": "mp4"}]}
    whole = {"apiVersion": "media.transkube.dev/v1alpha1", "kind": "TranscodeJob",
             "metadata": {"name": "from-file", "namespace": "ns1"}, "spec": spec}
    assert load_manifest(whole) == (spec, "from-file", "ns1")
    assert load_manifest(spec) == (spec, None, None)
    req = build_submit(manifest=whole, input_uri="s3://transkube/in/b.mp4", name="flag-name",
                       outputs=["uri=s3://transkube/o/b.webm,container=webm"])
    assert req.name == "flag-name" and req.namespace == "ns1"
    assert req.spec.input.uri == "s3://transkube/in/b.mp4"
    assert [o.name for o in req.spec.outputs] == ["a", "b"]
    with pytest.raises(SpecError) as exc:
        load_manifest({**whole, "kind": "Pod"})
    assert exc.value.field == "kind"
    with pytest.raises(SpecError):
        load_manifest(["not", "a", "mapping"])


def builtin_presets() -> dict[str, dict[str, Any]]:
    """The chart's built-in TranscodePresets' specs (templates/presets.yaml without its template lines)."""
    text = (Path(__file__).resolve().parents[2] / "charts/transkube/templates/presets.yaml").read_text()
    docs = yaml.safe_load_all("\n".join(line for line in text.splitlines() if "{{" not in line))
    return {d["metadata"]["name"]: d["spec"] for d in docs if d}


def outputs_of(req: Any) -> list[dict[str, Any]]:
    return list(req.manifest()["spec"]["outputs"])


def test_defaults_name_and_place_outputs_next_to_the_input() -> None:
    """The README one-liner: `--output container=mp4,height=720` is a whole output."""
    req = build_submit(input_uri="s3://transkube/in/dir/clip.final.mov",
                       outputs=["container=mp4,height=720", "container=mp4,height=720", "container=webm",
                                "container=mp4,resolution=480p", "container=m4a", "type=poster"])
    got = [(o["name"], o["uri"]) for o in outputs_of(req)]
    base = "s3://transkube/in/dir/clip.final"
    assert got == [("mp4-720p", f"{base}-mp4-720p.mp4"), ("mp4-720p-2", f"{base}-mp4-720p-2.mp4"),
                   ("webm", f"{base}-webm.webm"), ("mp4-480p", f"{base}-mp4-480p.mp4"), ("m4a", f"{base}-m4a.m4a"),
                   ("poster", f"{base}-poster.jpg")]
    # No directory, no extension; a given URI still names its output (made unique).
    req = build_submit(input_uri="s3://bkt/clip", outputs=["container=mp4", "uri=s3://bkt/o/a.mp4,container=mp4",
                                                           "uri=s3://bkt/p/a.webm,container=webm"])
    assert [(o["name"], o["uri"]) for o in outputs_of(req)] == [
        ("mp4", "s3://bkt/clip-mp4.mp4"), ("a", "s3://bkt/o/a.mp4"), ("a-2", "s3://bkt/p/a.webm")]


def test_default_uris_never_collide_with_the_input_or_other_outputs() -> None:
    taken = fill_defaults([{"name": "x", "uri": "s3://bkt/in/clip-webm.webm", "container": "webm"},
                           {"container": "webm"}], "s3://bkt/in/clip.mp4", {})
    assert taken[1] == {"container": "webm", "name": "webm", "uri": "s3://bkt/in/clip-webm-2.webm"}
    # A prefix output never lands over another output, nor a file under a prefix output.
    spec = {"input": {"uri": "s3://bkt/in/clip.mp4"},
            "outputs": [{"name": "x", "uri": "s3://bkt/in/clip-hls/x.mp4", "container": "mp4"},
                        {"name": "hls", "type": "hls"},
                        {"name": "y", "uri": "s3://bkt/in/clip-z/", "type": "thumbnails",
                         "thumbnails": {"intervalSeconds": 5}},
                        {"name": "z/", "container": "mp4"}]}
    filled = fill_defaults(spec["outputs"], spec["input"]["uri"], {})
    assert filled[1]["uri"] == "s3://bkt/in/clip-hls-2/"
    assert "uri" not in filled[3]  # an invalid name gives no URI: validation names outputs[3].name
    req = build_submit(manifest={"input": {"uri": "s3://bkt/in/clip.mp4"},
                                 "outputs": [{"type": "thumbnails", "thumbnails": {"intervalSeconds": 5}}]})
    assert outputs_of(req)[0]["uri"] == "s3://bkt/in/clip-thumbnails/"
    # Keys are taken literally: no path normalisation.
    assert fill_defaults([{"container": "mp4"}], "s3://bkt/a//b/c.d.mp4", {})[0]["uri"] == "s3://bkt/a//b/c.d-mp4.mp4"
    # Without a container there is no extension (and no valid file output): the container is named.
    for flags in ("height=720", "name=x"):
        with pytest.raises(SpecError) as exc:
            build_submit(input_uri=IN, outputs=[flags])
        assert exc.value.field == "outputs[0].container" and "container=mp4" in exc.value.detail


def test_preset_outputs_name_the_preset_and_the_operator_merges_it() -> None:
    presets = builtin_presets()
    # An hls preset: the output stays {name, uri, preset}; its URI is a prefix because the preset's type is hls.
    req = build_submit(input_uri=IN, preset="hls-default", presets=presets)
    (out,) = outputs_of(req)
    assert out == {"name": "hls-default", "uri": "s3://transkube/inputs/My_Clip-hls-default/", "type": "file",
                   "preset": "hls-default"}
    resolved = resolve_output(out, presets["hls-default"])  # what the operator will record
    assert resolved["type"] == "hls" and resolved["streaming"]["autoLadder"] == {"maxRenditions": 4}
    # crf vs bitrate: a bitrate override drops the preset's crf (the shared rule), never keeps both.
    req = build_submit(input_uri=IN, outputs=["vbitrate=2M"], preset="web-720p", presets=presets)
    (out,) = outputs_of(req)
    assert out["preset"] == "web-720p" and out["video"] == {"codec": "h264", "bitrate": "2M"}
    assert out["uri"] == "s3://transkube/inputs/My_Clip-web-720p.mp4"
    video = resolve_output(out, presets["web-720p"])["video"]
    assert video["bitrate"] == "2M" and "crf" not in video and video["resolution"] == "720p"
    # Every --output names the preset; names stay unique.
    req = build_submit(input_uri=IN, outputs=["crf=28", "crf=30"], preset="web-720p", presets=presets)
    assert [o["name"] for o in outputs_of(req)] == ["web-720p", "web-720p-2"]
    # A merge that cannot work is refused before anything is sent, naming the output.
    with pytest.raises(SpecError) as exc:
        build_submit(input_uri=IN, outputs=["container=webm"], preset="web-720p", presets=presets)
    assert exc.value.field == "outputs[0]" and "webm cannot carry" in exc.value.detail
    with pytest.raises(SpecError) as exc:
        build_submit(input_uri=IN, outputs=["type=dash"], preset="hls-default", presets=presets)
    assert exc.value.field == "outputs[0]" and "does not match the preset's type" in exc.value.detail
    # A manifest output naming a preset that was not read cannot get a default URI.
    with pytest.raises(SpecError) as exc:
        build_submit(manifest={"input": {"uri": IN}, "outputs": [{"preset": "web-1080p"}]})
    assert exc.value.field == "outputs[0].uri"
    req = build_submit(manifest={"input": {"uri": IN}, "outputs": [{"preset": "thumbnail-sprite"}]},
                       presets=presets)
    assert outputs_of(req)[0]["uri"] == "s3://transkube/inputs/My_Clip-thumbnail-sprite/"


def test_build_submit_priority_and_pool() -> None:
    req = build_submit(input_uri=IN, outputs=["uri=s3://transkube/o/w.mp4,container=mp4"], priority=20, pool="gpu")
    assert req.manifest()["spec"]["priority"] == 20 and req.manifest()["spec"]["pool"] == "gpu"
    with pytest.raises(SpecError) as exc:
        build_submit(input_uri=IN, outputs=["uri=s3://transkube/o/w.mp4,container=mp4"], priority=99)
    assert exc.value.field == "priority"
    with pytest.raises(SpecError) as exc:
        build_submit(input_uri=IN, outputs=["uri=s3://transkube/o/w.mp4,container=mp4"], pool="GPU pool")
    assert exc.value.field == "pool"


def test_retry_patch_is_guarded_like_the_shims() -> None:
    job = {"spec": {"manualRetry": 2}, "status": {"phase": "Failed", "manualRetries": 2}}
    assert retry_refusal(job) is None
    assert retry_patch(job) == [{"op": "test", "path": "/status/phase", "value": "Failed"},
                                {"op": "test", "path": "/spec/manualRetry", "value": 2},
                                {"op": "replace", "path": "/spec/manualRetry", "value": 3}]
    assert retry_precondition(job) == ("Failed", 2)
    assert "already requested" in (retry_refusal({**job, "spec": {"manualRetry": 3}}) or "")
    assert "this one is Running" in (retry_refusal({"status": {"phase": "Running"}}) or "")
    assert "this one is Queued" in (retry_refusal({}) or "")


def test_field_path() -> None:
    assert field_path(("outputs", 0, "video", "crf")) == "outputs[0].video.crf"
    assert field_path(("outputs", 1, "function-after[_check(), VideoSpec]")) == "outputs[1]"
    assert field_path(()) == ""


# ---- rendering --------------------------------------------------------------------------------------------

def test_progress_line_running_shows_stage_percent_fps_speed_eta() -> None:
    status = {"phase": "Running", "progress": {"stage": "Transcoding", "percent": 41.6, "fps": 119.6, "speed": 2.1,
                                               "etaSeconds": 12, "eta": "12s"}}
    line = render.progress_line("clip", status, width=10)
    assert line == "clip  Running  Transcoding  [####------]   41.6%  120 fps  2.10x  ETA 12s"
    no_eta_text = {"phase": "Running", "progress": {"stage": "Transcoding", "percent": 5, "etaSeconds": 75}}
    assert render.progress_line("c", no_eta_text).endswith("ETA 1m15s")


def test_progress_line_other_phases() -> None:
    # not seen by the operator yet: waiting to be admitted (stage Pending: nothing ran)
    assert render.progress_line("c", None, 4) == "c  Queued  Pending  [----]    0.0%"
    done = render.progress_line("c", {"phase": "Succeeded", "progress": {"stage": "Done", "percent": 99.9}}, 4)
    assert done == "c  Succeeded  Done  [####]  100.0%"
    failed = render.progress_line("c", {"phase": "Failed", "reason": "InputNotFound",
                                        "progress": {"stage": "Downloading", "fps": 3}}, 4)
    assert failed == "c  Failed  Downloading  [----]    0.0%  InputNotFound"


def test_bar_and_formatting() -> None:
    assert render.bar(-5, 4) == "[----]" and render.bar(250, 4) == "[####]" and render.bar(50, 4) == "[##--]"
    assert [render.format_duration(s) for s in (None, -1, 0, 59.6, 75, 3725, 90000)] == \
        ["-", "-", "0s", "1m00s", "1m15s", "1h02m", "1d01h"]
    assert [render.format_bytes(n) for n in (None, 0, 1023, 1536, 5 * 1024 ** 3)] == \
        ["-", "0 B", "1023 B", "1.5 KiB", "5.0 GiB"]
    assert render.upload_line("up", 512, 1024, 4) == "up  [##--]  50.0%  512 B / 1.0 KiB"
    assert render.upload_line("up", 512, None) == "up  512 B"


@pytest.mark.parametrize(("phase", "deleted", "code"), [
    ("Succeeded", False, Exit.OK), ("Failed", False, Exit.FAILED), ("Cancelled", False, Exit.CANCELLED),
    ("Running", False, None), ("Pending", False, None), ("Suspended", False, None), (None, False, None),
    (None, True, Exit.GONE),
])
def test_exit_code(phase: str | None, deleted: bool, code: int | None) -> None:
    assert render.exit_code(phase, deleted) == code


def test_final_message_names_the_reason() -> None:
    msg = render.final_message("x", {"phase": "Failed", "reason": "InputNotFound", "message": "no such key"})
    assert msg == "transcodejob x Failed: InputNotFound: no such key"
    assert render.final_message("x", {"phase": "Cancelled", "reason": "Cancelled"}) == \
        "transcodejob x Cancelled: Cancelled"
    assert "2 output(s)" in render.final_message("x", {"phase": "Succeeded", "outputs": [{}, {}]})
    assert "deleted" in render.final_message("x", None, deleted=True)


def test_tables() -> None:
    now = datetime(2025, 1, 1, 0, 1, 0, tzinfo=UTC)
    jobs: list[dict[str, Any]] = [
        {"metadata": {"name": "a", "creationTimestamp": "2025-01-01T00:00:00Z"},
         "status": {"phase": "Running", "progress": {"stage": "Transcoding", "percent": 12.345, "eta": "9s"}}},
        {"metadata": {"name": "bb"}, "status": {}},
    ]
    text = render.table(render.JOB_HEADERS, render.job_rows(jobs, now))
    assert text.splitlines() == [
        "NAME   PHASE     STAGE         PROGRESS   ETA   REASON   AGE",
        "a      Running   Transcoding   12.3       9s    -        1m00s",
        "bb     Queued    -             -          -     -        -",
    ]
    rows = render.output_rows({"outputs": [{"name": "web", "uri": "s3://b/w.mp4", "sizeBytes": 10,
                                            "checksum": "sha256:ab"}, {"name": "hls", "uri": "s3://b/h/"}]})
    assert rows == [["web", "s3://b/w.mp4", "10", "sha256:ab"], ["hls", "s3://b/h/", "-", "-"]]


def test_queue_position_failure_category_and_pending_retries_are_shown() -> None:
    queued = {"phase": "Queued", "queue": {"pool": "gpu", "priority": 5, "position": 3, "reason": "PoolCapacity"}}
    assert render.progress_line("c", queued, 4) == \
        "c  Queued  Pending  [----]    0.0%  position 3 in gpu (PoolCapacity)"
    assert render.queue_text({"phase": "Queued", "queue": {"pool": "cpu", "priority": 0}}) == "waiting in cpu"
    assert render.queue_text({"phase": "Running", "queue": {"pool": "cpu", "priority": 0}}) == ""
    failed = {"phase": "Failed", "reason": "InputNotFound", "failureCategory": "BadInput"}
    assert render.progress_line("c", failed, 4).endswith("InputNotFound (BadInput)")
    now = datetime(2025, 1, 1, 0, 1, 0, tzinfo=UTC)
    jobs: list[dict[str, Any]] = [
        {"metadata": {"name": "q"}, "status": queued},
        {"metadata": {"name": "f"}, "status": failed},
        {"metadata": {"name": "r"}, "spec": {"manualRetry": 1}, "status": {**failed, "manualRetries": 0}},
    ]
    rows = render.job_rows(jobs, now)
    assert [r[1] for r in rows] == ["Queued:3", "Failed", "Failed:retrying"]
    assert [r[5] for r in rows] == ["-", "BadInput/InputNotFound", "BadInput/InputNotFound"]


def test_exit_code_waits_while_a_retry_is_pending() -> None:
    failed = {"spec": {"manualRetry": 1}, "status": {"phase": "Failed", "manualRetries": 1}}
    assert render.job_exit_code(failed) == Exit.FAILED
    pending = {"spec": {"manualRetry": 2}, "status": {"phase": "Failed", "manualRetries": 1}}
    assert render.retry_pending(pending) and render.job_exit_code(pending) is None
    assert render.job_exit_code({"status": {"phase": "Succeeded", "manualRetries": 1},
                                 "spec": {"manualRetry": 2}}) == Exit.OK  # only a Failed job waits for a retry
    assert render.job_exit_code({}) is None


def test_describe_shows_priority_queue_history_and_webhooks() -> None:
    job = {"metadata": {"name": "j", "namespace": "n"},
           "spec": {"input": {"uri": "s3://b/i.mp4"}, "outputs": [{"name": "w", "uri": "s3://b/w.mp4"}],
                    "priority": 7, "manualRetry": 1,
                    "webhooks": [{"name": "notify"}, {"name": "gone"}]},
           "status": {"phase": "Succeeded", "attempts": 3, "manualRetries": 1, "queue": {"pool": "cpu", "priority": 7},
                      "attemptHistory": [
                          {"attempt": 1, "round": 0, "pod": "j-a", "exitCode": 3, "failureClass": "Permanent",
                           "reason": "InputNotFound", "startTime": "2025-01-01T00:00:00Z",
                           "finishTime": "2025-01-01T00:00:05Z"},
                          {"attempt": 2, "round": 1, "pod": "j-b", "exitCode": 0}],
                      "webhooks": [{"name": "gone", "disabled": True, "disabledReason": "Gone"}],
                      "webhookDeliveries": [{"webhook": "notify", "state": "Delivered"},
                                            {"webhook": "notify", "state": "Delivered"},
                                            {"webhook": "notify", "state": "Pending"},
                                            {"webhook": "gone", "state": "Abandoned"}]}}
    text = render.describe(job)
    assert "Priority:   7  pool cpu" in text and "Attempts:   3 (1 manual retries)" in text
    assert "Retry:" not in text
    lines = text.splitlines()
    history = lines.index("History:")
    assert lines[history + 1].split() == list(render.ATTEMPT_HEADERS)
    assert lines[history + 2].split() == ["1", "0", "j-a", "3", "Permanent", "InputNotFound", "5s"]
    assert lines[history + 3].split() == ["2", "1", "j-b", "0", "-", "-", "-"]
    assert "  notify: 2 delivered, 1 pending" in lines and "  gone: 1 abandoned (disabled: Gone)" in lines
    queued = render.describe({"metadata": {"name": "q"}, "spec": {"manualRetry": 1},
                              "status": {"phase": "Queued", "manualRetries": 1,
                                         "queue": {"pool": "gpu", "priority": 0, "position": 2}}})
    assert "Phase:      Queued, position 2 in gpu" in queued and "Priority:   0  pool gpu" in queued
    pending = render.describe({"metadata": {"name": "p"}, "spec": {"manualRetry": 2},
                               "status": {"phase": "Failed", "manualRetries": 1, "failureCategory": "Transient"}})
    assert "Retry:      requested (manualRetry 2), not started yet" in pending and "Category:   Transient" in pending


def test_describe_and_checksum() -> None:
    job = {"metadata": {"name": "j", "namespace": "n"}, "spec": {"input": {"uri": "s3://b/i.mp4"},
                                                               "outputs": [{"name": "w", "uri": "s3://b/w.mp4"}]},
           "status": {"phase": "Failed", "reason": "InputNotFound", "message": "gone", "attempts": 1}}
    text = render.describe(job)
    assert "Reason:     InputNotFound" in text and "w -> s3://b/w.mp4 (not written yet)" in text
    assert render.checksum_ok("sha256:ABC", "abc") is True
    assert render.checksum_ok("sha256:abc", "abd") is False
    assert render.checksum_ok(None, "abc") is None


def test_shim_events_fold_into_a_status() -> None:
    job = {"name": "j", "createdAt": "t", "spec": {"input": {}}, "status": {"phase": "Pending"}}
    cr = render.shim_job_to_cr(job)
    assert cr["metadata"]["name"] == "j" and cr["status"] == {"phase": "Pending"}
    status = render.fold_event({}, "state", job)
    status = render.fold_event(status, "phase", {"from": "Pending", "to": "Running", "reason": None})
    status = render.fold_event(status, "stage", {"from": None, "to": "Transcoding"})
    assert status == {"phase": "Running", "progress": {"stage": "Transcoding"}}
    status = render.fold_event(status, "progress", {"stage": "Transcoding", "percent": 50})
    status = render.fold_event(status, "phase", {"from": "Running", "to": "Failed", "reason": "InternalError",
                                                 "message": "boom"})
    assert status == {"phase": "Failed", "reason": "InternalError", "message": "boom",
                      "progress": {"stage": "Transcoding", "percent": 50}}
    assert render.fold_event(status, "heartbeat", {}) == status


def test_sse_parse() -> None:
    lines = ["retry: 3000", "", ": comment", "id: 7", "event: state", 'data: {"a": 1}', "",
             "event: progress", 'data: {"b":', 'data: 2}', "", "event: heartbeat", "data: {}", "",
             "event: broken", "data: not json", "", "data: {\"m\": 1}", "", "event: cut", "data: {}"]
    assert list(sse.parse(lines)) == [("state", {"a": 1}), ("progress", {"b": 2}), ("heartbeat", {}),
                                      ("message", {"m": 1})]
    # The last id persists across events (heartbeats carry none): what a reconnect sends as Last-Event-ID.
    assert [e.id for e in sse.events(lines)] == ["7", "7", "7", "7"]
    assert [e.id for e in sse.events(["event: heartbeat", "data: {}", ""])] == [None]


def test_sse_reconnect_backoff_doubles_and_is_capped() -> None:
    delays = [sse.reconnect_delay(n) for n in range(1, 10)]
    assert delays[:4] == [1, 2, 4, 8]
    assert max(delays) == sse.RECONNECT_MAX_SECONDS and delays == sorted(delays)


# ---- the command line itself (no backend needed) ----------------------------------------------------------

class FakeBackend:
    """Records calls; `retry` answers like both backends do (the job in the CR's shape)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def retry(self, name: str) -> dict[str, Any]:
        self.calls.append(("retry", name))
        return {"metadata": {"name": name}, "spec": {"manualRetry": 1}, "status": {"phase": "Failed"}}

    def watch(self, name: str) -> Any:
        self.calls.append(("watch", name))
        yield {"metadata": {"name": name}, "spec": {"manualRetry": 1}, "status": {"phase": "Failed"}}  # pending
        yield {"metadata": {"name": name}, "spec": {"manualRetry": 1},
               "status": {"phase": "Queued", "manualRetries": 1, "queue": {"pool": "cpu", "priority": 0,
                                                                           "position": 1}}}
        yield {"metadata": {"name": name}, "spec": {"manualRetry": 1},
               "status": {"phase": "Succeeded", "manualRetries": 1, "outputs": [{}]}}


def test_retry_command_then_watch_to_the_end(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeBackend()
    monkeypatch.setattr(cli_main, "backend", lambda args: fake)
    assert main(["retry", "web", "--watch", "-q"]) == Exit.OK  # the pending Failed did not end the watch
    out = capsys.readouterr().out
    assert "transcodejob web retry requested (manualRetry 1)" in out and "web Succeeded" in out
    assert fake.calls == [("retry", "web"), ("watch", "web")]
    args = parser().parse_args(["submit", "--input", IN, "--priority", "-5", "--pool", "gpu"])
    assert (args.priority, args.pool) == (-5, "gpu")


def test_global_options_before_or_after_the_command() -> None:
    before = parser().parse_args(["-n", "media", "--api-url", "http://x", "watch", "job"])
    after = parser().parse_args(["watch", "job", "-n", "media", "--api-url", "http://x"])
    for args in (before, after):
        assert (args.namespace, args.api_url, args.name, args.quiet) == ("media", "http://x", "job", False)


def test_dry_run_prints_the_manifest_and_bad_specs_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", "--dry-run", "--input", IN, "--name", "x",
                 "--output", "uri=s3://transkube/o/w.mp4,container=mp4,height=240"]) == Exit.OK
    out = capsys.readouterr().out
    assert "kind: TranscodeJob" in out and "name: x" in out and "height: 240" in out
    assert main(["submit", "--dry-run", "--input", IN,
                 "--output", "uri=s3://transkube/o/w.mp4,container=mp4,crf=99"]) == Exit.USAGE
    assert "outputs[0].video.crf" in capsys.readouterr().err


def test_shim_backend_needs_a_key(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRANSKUBE_API_KEY", raising=False)
    assert main(["list", "--api-url", "http://127.0.0.1:9"]) == Exit.USAGE
    assert "TRANSKUBE_API_KEY" in capsys.readouterr().err


def test_submit_validates_before_connecting(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    monkeypatch.delenv("TRANSKUBE_API_URL", raising=False)
    assert main(["submit", "--input", IN, "--output", "uri=s3://transkube/o/w.webm,container=webm,vcodec=h264"]) \
        == Exit.USAGE
    err = capsys.readouterr().err
    assert "outputs[0]: webm cannot carry" in err and "credentials" not in err
    # A preset must be read first: then the backend is needed (and here has no credentials).
    assert main(["submit", "--preset", "p", "--input", IN]) == 5
    assert "no Kubernetes credentials" in capsys.readouterr().err
