"""Entry point of `transkube-worker`: `transkube-worker run` executes one attempt of the TranscodeJob described
by the environment (see config.py); `transkube-worker cleanup` removes what a killed attempt left behind
(cleanup.py). Orchestration only; the decisions live in the other modules.

Stages: Downloading -> Probing -> Transcoding -> Uploading -> Done. Exit 0 on success; on failure a JSON
termination message {"reason", "message"} and the failure class's exit code (transkube_api.constants.ExitCode).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from transkube_api.constants import ExitCode
from transkube_api.models import (
    InputFacts,
    OutputResult,
    OutputSpec,
    Progress,
    QualityMetrics,
    RenditionResult,
    TranscodeJobSpec,
)

from . import __version__
from .cleanup import run_cleanup
from .config import DEFAULT_TERMINATION_LOG, WorkerConfig
from .errors import Internal, InvalidInput, QualityBelowThreshold, Unsupported, WorkerError, termination_message
from .faults import Fault, Stall, Throttle, UploadHold, lookup_fault, slow_transfer_config
from .ffmpeg_args import (
    DEFAULT_LIMITS,
    Accelerator,
    Limits,
    LoudnormMeasurement,
    bitrate_bits,
    check_streams,
    output_paths,
)
from .limits import check_facts, check_size
from .logs import configure_logging
from .media_args import (
    DASH_MANIFEST,
    HLS_MASTER,
    ladder,
    parse_loudnorm,
    rendition_key,
    rendition_parts,
    sprite_layout,
    storyboard_vtt,
)
from .probe import ProbeFailed, probe_input, probe_output, run_ffprobe
from .progress import ProgressReporter, ProgressSample, compute_progress, utcnow
from .quality import (
    QualityOutcome,
    available_filters,
    boosted,
    computable,
    gate_value,
    join_rendition,
    parse_metrics,
    quality_argv,
)
from .signals import SignalGuard
from .status_writer import KubeStatusWriter, NullStatusWriter, StatusWriter
from .steps import Step, analysis_steps, media_seconds, media_steps
from .storage import (
    CONTENT_TYPES,
    DEFAULT_MULTIPART_THRESHOLD,
    ByteCounter,
    S3Location,
    Upload,
    abort_stale_uploads,
    delete_objects,
    download,
    head_size,
    make_client,
    parse_s3_uri,
    sha256_file,
    stale_upload_targets,
    transfer_config,
    upload_all,
)
from .transcode import run_ffmpeg

if TYPE_CHECKING:
    import subprocess

    from boto3.s3.transfer import TransferConfig
    from mypy_boto3_s3.client import S3Client
    from s3transfer.subscribers import BaseSubscriber

log = logging.getLogger("transkube_worker")

SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


def transcode_step(spec: TranscodeJobSpec, input_path: Path, outputs: dict[str, Path], facts: InputFacts,
                   accelerator: Accelerator, reporter: ProgressReporter, *, limits: Limits = DEFAULT_LIMITS,
                   assets: dict[str, Path] | None = None,
                   quality: dict[str, QualityOutcome] | None = None,
                   on_spawn: Callable[[subprocess.Popen[str]], None] | None = None) -> list[str]:
    """Plan and run every ffmpeg step on local files (loudness analyses first, then the file outputs' shared
    run, then one run per package/image output, then the quality measurements and any quality re-encode),
    reporting progress over all of them as one Transcoding stage (never going backwards); returns the argv of
    the first output-writing step and fills `quality` with each measured output's outcome. This is also what
    bench/worker_overhead.py measures, so it stays free of storage and Kubernetes."""
    check_streams(spec, facts)  # before anything runs: an output the input cannot feed fails at once
    for name, path in outputs.items():
        if any(o.name == name and o.is_prefix for o in spec.outputs):
            path.mkdir(parents=True, exist_ok=True)
    measured = [o for o in spec.outputs if o.quality is not None]
    # A package is measured once per rendition.
    measurements = sum(media_seconds(o, facts) * (len(ladder(o.streaming, facts)) if o.is_prefix else 1)
                       for o in measured)
    analyses = analysis_steps(spec, input_path, facts, limits)
    # Planned once without measurements only to weigh the steps (and to fail fast on input that cannot feed them).
    weights = [s.media_seconds for s in media_steps(spec, input_path, outputs, facts, accelerator, limits=limits,
                                                    assets=assets)]
    total = (sum(s.media_seconds for s in analyses) + sum(weights)
             + measurements) or None
    reporter.update(compute_progress("Transcoding", utcnow(), duration_seconds=total))
    done = 0.0
    best = 0.0

    def run(step: Step, last: bool) -> str:
        nonlocal done
        offset = done

        def on_sample(sample: ProgressSample) -> None:
            nonlocal best
            shifted = ProgressSample(frame=sample.frame, fps=sample.fps, speed=sample.speed,
                                     out_time_seconds=offset + min(sample.out_time_seconds or 0.0,
                                                                   step.media_seconds),
                                     end=sample.end and last)
            progress = compute_progress("Transcoding", utcnow(), sample=shifted, duration_seconds=total)
            best = max(best, progress.percent)  # a quality re-encode adds work: hold, never go back
            reporter.update(progress.model_copy(update={"percent": best}))

        stderr = run_ffmpeg(step.argv, on_sample, on_spawn=on_spawn)
        done += step.media_seconds
        return stderr

    loudness: dict[str, LoudnormMeasurement] = {}
    for step in analyses:
        loudness[step.name] = parse_loudnorm(run(step, last=False))
    steps = media_steps(spec, input_path, outputs, facts, accelerator, limits=limits, assets=assets,
                        loudness=loudness)
    for i, step in enumerate(steps):
        run(step, last=i == len(steps) - 1 and not measured)
        log.info("step done", extra={"fields": {"step": step.name, "argv": step.argv}})
    for o in spec.outputs:
        if o.type == "sprite":
            (outputs[o.name] / "storyboard.vtt").write_text(storyboard_vtt(sprite_layout(o, facts)))

    def compare(o: OutputSpec, encoded: Path, metrics: list[str], unavailable: list[str],
                label: str) -> QualityMetrics:
        probed = probe_output(encoded, name=o.name, uri=o.uri, checksum=None)
        if not probed.width or not probed.height:
            raise Internal(f"{label} has no video to measure")
        argv = quality_argv(o, encoded, input_path, facts, probed.width, probed.height, metrics, limits=limits)
        stderr = run(Step(f"quality-{o.name}", argv, media_seconds(o, facts)), last=False)
        try:
            result = parse_metrics(stderr, metrics, unavailable)
        except ValueError as exc:
            raise Internal(f"{label}: {exc}") from exc
        log.info("quality measured", extra={"fields": {"output": label, "metrics": result.wire()}})
        return result

    def measure(o: OutputSpec) -> QualityOutcome:
        assert o.quality is not None
        if facts.video_codec is None:
            raise InvalidInput(f"output {o.name} asks for quality metrics, but the input has no video")
        metrics, unavailable = computable(list(o.quality.metrics), available_filters())
        gate = o.quality.gate
        if gate is not None and gate.metric in unavailable:
            raise Unsupported(f"output {o.name}: the quality gate needs {gate.metric}, which this worker's ffmpeg "
                              "cannot compute (no libvmaf)")
        if o.type in ("hls", "dash"):
            out_dir = outputs[o.name]
            measured_renditions: list[QualityMetrics] = []
            for i, r in enumerate(ladder(o.streaming, facts)):
                if not metrics:
                    measured_renditions.append(parse_metrics("", [], unavailable))
                    continue
                # Outside the output's directory: never uploaded; removed right after the measurement.
                joined = out_dir.parent / f".quality-{o.name}-{r.name}.mp4"
                try:
                    join_rendition(rendition_parts(out_dir, rendition_key(o, i, r)), joined)
                    measured_renditions.append(compare(o, joined, metrics, unavailable,
                                                       f"output {o.name} rendition {r.name}"))
                except FileNotFoundError as exc:
                    raise Internal(f"output {o.name}: {exc}") from exc
                finally:
                    joined.unlink(missing_ok=True)
            return QualityOutcome(None, renditions=tuple(measured_renditions))
        if not metrics:
            return QualityOutcome(parse_metrics("", [], unavailable))
        return QualityOutcome(compare(o, outputs[o.name], metrics, unavailable, f"output {o.name}"))

    for o in measured:
        assert o.quality is not None
        outcome = measure(o)
        gate = o.quality.gate
        if gate is not None and outcome.renditions:
            # Every rendition must pass (no re-encode for packages: the API refuses onFail reencode there).
            for r, m in zip(ladder(o.streaming, facts), outcome.renditions, strict=True):
                value = gate_value(m, gate.metric)
                if value is not None and value < gate.min:
                    raise QualityBelowThreshold(f"output {o.name} rendition {r.name}: {gate.metric} {value:g} is "
                                                f"below the gate's min {gate.min:g}")
        value = gate_value(outcome.metrics, gate.metric) if gate and outcome.metrics else None
        if gate is not None and value is not None and value < gate.min:
            if gate.on_fail == "reencode":
                better = boosted(o)
                log.info("quality below the gate: re-encoding", extra={"fields": {
                    "output": o.name, gate.metric: value, "min": gate.min,
                    "video": better.video.wire() if better.video else None}})
                total = (total or 0.0) + 2 * media_seconds(o, facts)  # run() reads it: the bar makes room
                one = spec.model_copy(update={"outputs": [better]})
                for step in media_steps(one, input_path, outputs, facts, accelerator, limits=limits, assets=assets,
                                        loudness=loudness):
                    run(step, last=False)
                outcome = QualityOutcome(measure(better).metrics, reencoded=True)
                value = gate_value(outcome.metrics, gate.metric) if outcome.metrics else None
            if value is not None and value < gate.min:
                after = " after one re-encode at a higher quality" if outcome.reencoded else ""
                raise QualityBelowThreshold(f"output {o.name}: {gate.metric} {value:g} is below the gate's min "
                                            f"{gate.min:g}{after}")
        if quality is not None:
            quality[o.name] = outcome
    return steps[0].argv if steps else []


class Attempt:
    """One run of the job. Keeps what cleanup needs: the scratch dir and the objects it started uploading."""

    def __init__(self, cfg: WorkerConfig, status: StatusWriter, fault: Fault | None = None) -> None:
        self.cfg = cfg
        self.status = status
        self.fault = fault  # test-only fault injection (faults.py); None on the normal path
        self.stall = Stall() if fault is Fault.STALL else None
        # Done goes through write_final (retried: it carries status.outputs); the rest is best-effort.
        self.reporter = ProgressReporter(self._write, cfg.progress_interval)
        self.scratch: Path | None = None
        self.client: S3Client | None = None
        self.submitted: list[S3Location] = []
        self.quality: dict[str, QualityOutcome] = {}

    def _write(self, progress: Progress) -> None:
        if progress.stage == "Done":
            self.status.write_final(progress)
        else:
            self.status.write_progress(progress)
            if self.stall is not None:
                self.stall.after_write(progress.stage)  # test-only: blocks (ffmpeg stopped) until SIGTERM

    def execute(self) -> list[OutputResult]:
        """Everything up to complete, uploaded outputs."""
        spec = self.cfg.spec
        self.cfg.scratch_dir.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix="transkube-", dir=self.cfg.scratch_dir))
        self.client = make_client()
        input_path = self._download(self.client, parse_s3_uri(spec.input.uri), check_input_size=True)
        injected = self.fault.error() if self.fault is not None else None
        if injected is not None:
            raise injected  # test-only exit-* fault, through the normal failure path
        facts = self._probe(input_path)
        assets = self._download_assets(self.client)
        out_dir = self.scratch / "out"
        out_dir.mkdir()
        outputs = output_paths(spec, out_dir)
        started = time.monotonic()
        argv = transcode_step(spec, input_path, outputs, facts, self.cfg.accelerator, self.reporter,
                              limits=self.cfg.limits.ffmpeg, assets=assets, quality=self.quality,
                              on_spawn=self.stall.on_spawn if self.stall is not None else None)
        log.info("transcoded", extra={"fields": {"seconds": round(time.monotonic() - started, 2), "argv": argv}})
        return self._upload(self.client, outputs, facts)

    def finish(self, results: list[OutputResult]) -> None:
        self.status.attach_outputs(results)
        self.reporter.update(compute_progress("Done", utcnow()))
        log.info("done", extra={"fields": {"outputs": [r.wire() for r in results]}})

    def _download(self, client: S3Client, loc: S3Location, *, check_input_size: bool = False,
                  name: str = "input") -> Path:
        assert self.scratch is not None
        self.reporter.update(compute_progress("Downloading", utcnow()))
        size = head_size(client, loc)
        if check_input_size:
            check_size(size, self.cfg.limits)  # before spending the bandwidth and the scratch space
        suffix = Path(loc.key).suffix
        # Keep a plain extension: it helps ffmpeg with raw formats (.h264, .aac) that have no magic bytes.
        dest = self.scratch / (name + (suffix if SAFE_SUFFIX.fullmatch(suffix) else ""))
        counter = ByteCounter(size)
        started = time.monotonic()

        def tick() -> None:
            self.reporter.update(compute_progress("Downloading", utcnow(), done_bytes=counter.done, total_bytes=size))

        config, extra = self._transfer_settings()
        download(client, loc, dest, counter, config, tick, extra)
        log.info("downloaded", extra={"fields": {"uri": loc.uri, "bytes": size,
                                                 "seconds": round(time.monotonic() - started, 2)}})
        return dest

    def _probe(self, path: Path) -> InputFacts:
        self.reporter.update(compute_progress("Probing", utcnow()))
        facts = probe_input(path)
        # Written together with the Transcoding stage change, one request for both.
        self.status.attach_input(facts)
        log.info("probed", extra={"fields": {"input": facts.wire()}})
        check_facts(facts, self.cfg.limits)
        return facts

    def _download_assets(self, client: S3Client) -> dict[str, Path]:
        """Watermark images, one per output that has one, read with the input's credentials."""
        assets: dict[str, Path] = {}
        for o in self.cfg.spec.outputs:
            mark = o.filters.watermark if o.filters else None
            if mark is not None:
                assets[o.name] = self._download(client, parse_s3_uri(mark.uri), name=f"watermark-{o.name}")
        return assets

    def _upload(self, client: S3Client, outputs: dict[str, Path], facts: InputFacts) -> list[OutputResult]:
        spec = self.cfg.spec
        uploads: list[Upload] = []
        for o in spec.outputs:
            uploads += output_uploads(o, outputs[o.name])
        sizes = [(u.location, u.path.stat().st_size) for u in uploads]
        total = sum(size for _, size in sizes)
        counter = ByteCounter()
        checksums: dict[str, str] = {}
        config, extra = self._transfer_settings()
        hold = UploadHold(config.multipart_threshold, config.multipart_chunksize) \
            if self.fault is Fault.STALL_UPLOAD else None  # test-only (faults.py)
        if hold is not None:
            hold.configure(config)

        def tick() -> None:
            self.reporter.update(compute_progress("Uploading", utcnow(), done_bytes=counter.done, total_bytes=total))
            if hold is not None:
                hold.wait_if_held()  # test-only: blocks (uploads half done) until SIGTERM

        def hash_outputs() -> None:
            # Runs while the transfer threads upload: the checksum costs no extra wall time.
            for upload in uploads:
                checksums[upload.location.uri] = sha256_file(upload.path)
                tick()

        self.reporter.update(compute_progress("Uploading", utcnow(), done_bytes=0, total_bytes=total))
        self._abort_stale_uploads(client, sizes)
        started = time.monotonic()
        upload_all(client, uploads, counter, config, tick, self.submitted.append, hash_outputs,
                   subscribers=[*extra, hold] if hold is not None else extra)
        log.info("uploaded", extra={"fields": {"bytes": total, "seconds": round(time.monotonic() - started, 2)}})
        return [with_quality(output_result(o, outputs[o.name], facts, checksums.get(o.uri)), self.quality.get(o.name))
                for o in spec.outputs]

    def _transfer_settings(self) -> tuple[TransferConfig, list[BaseSubscriber]]:
        """The settings of one download or upload; the test-only slow-transfers fault (faults.py) makes them
        slow, in small parts, with a fresh throttle each."""
        if self.fault is Fault.SLOW_TRANSFERS:
            return slow_transfer_config(), [Throttle()]
        return transfer_config(), []

    def _abort_stale_uploads(self, client: S3Client, sizes: list[tuple[S3Location, int]]) -> None:
        """An earlier attempt that was killed (OOM, node loss, a stalled attempt) cannot abort its multipart
        uploads: they would keep their parts (and cost storage) forever unless the bucket has a lifecycle rule."""
        targets = stale_upload_targets([parse_s3_uri(o.uri) for o in self.cfg.spec.outputs], sizes,
                                       DEFAULT_MULTIPART_THRESHOLD // 2)  # half: sizes vary a bit between attempts
        aborted = abort_stale_uploads(client, targets)
        log.info("aborted stale multipart uploads", extra={"fields": {"aborted": aborted,
                                                                       "targets": len(targets)}})

    def discard_outputs(self) -> None:
        """A failed or interrupted attempt leaves no partial outputs behind (deleting a missing key is a no-op)."""
        if self.client is None or not self.submitted:
            return
        errors = delete_objects(self.client, self.submitted)
        log.info("deleted partial outputs", extra={"fields": {
            "uris": [loc.uri for loc in self.submitted], "errors": errors}})

    def remove_scratch(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def output_uploads(output: OutputSpec, path: Path) -> list[Upload]:
    """One object for a file/poster output; every file under the output's directory for multi-file outputs,
    each under the URI prefix with its relative name."""
    if not output.is_prefix:
        kind = output.container or (output.poster.format if output.poster else "jpeg")
        return [Upload(path, parse_s3_uri(output.uri), CONTENT_TYPES.get(kind, "application/octet-stream"))]
    prefix = parse_s3_uri(output.uri)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return [Upload(p, S3Location(prefix.bucket, prefix.key + p.relative_to(path).as_posix()),
                   CONTENT_TYPES.get(p.suffix.lstrip("."), "application/octet-stream")) for p in files]


def _probe_quiet(path: Path) -> dict[str, object]:
    try:
        return run_ffprobe(path)
    except ProbeFailed as exc:
        raise Internal(f"{path.name} is not readable: {exc.message}") from exc


def output_result(output: OutputSpec, path: Path, facts: InputFacts, checksum: str | None) -> OutputResult:
    """status.outputs[] for one output, probed from what was written."""
    if output.type == "file":
        return probe_output(path, name=output.name, uri=output.uri, checksum=checksum)
    if output.type == "poster":
        result = probe_output(path, name=output.name, uri=output.uri, checksum=checksum)
        return result.model_copy(update={"type": "poster", "duration_seconds": None})
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    size = sum((path / f).stat().st_size for f in files)
    base: dict[str, object] = {"name": output.name, "uri": output.uri, "type": output.type, "files": files,
                               "size_bytes": size}
    if output.type in ("thumbnails", "sprite"):
        image = next(f for f in files if not f.endswith(".vtt"))
        stream = (_probe_quiet(path / image).get("streams") or [{}])[0]  # type: ignore[index]
        return OutputResult.model_validate({**base, "width": stream.get("width"), "height": stream.get("height"),
                                            "video_codec": stream.get("codec_name")})
    renditions = []
    for i, r in enumerate(ladder(output.streaming, facts)):
        init = path / f"init_{rendition_key(output, i, r)}.mp4"
        stream = (_probe_quiet(init).get("streams") or [{}])[0]  # type: ignore[index]
        playlist = f"stream_{r.name}.m3u8" if output.type == "hls" else (
            f"media_{i}.m3u8" if output.streaming and output.streaming.also_hls else None)
        renditions.append(RenditionResult(width=stream.get("width"), height=stream.get("height"),
                                          bitrate=bitrate_bits(r.bitrate), playlist=playlist))
    playlist = HLS_MASTER if output.type == "hls" else DASH_MANIFEST
    probed = probe_output(path / playlist, name=output.name, uri=output.uri, checksum=None)
    return OutputResult.model_validate({
        **base, "renditions": renditions, "playlist": playlist, "duration_seconds": probed.duration_seconds,
        "video_codec": probed.video_codec, "audio_codec": probed.audio_codec,
        "width": renditions[0].width if renditions else None, "height": renditions[0].height if renditions else None})


def with_quality(result: OutputResult, outcome: QualityOutcome | None) -> OutputResult:
    if outcome is None:
        return result
    if outcome.renditions and result.renditions:
        renditions = [r.model_copy(update={"metrics": m})
                      for r, m in zip(result.renditions, outcome.renditions, strict=True)]
        return result.model_copy(update={"renditions": renditions})
    return result.model_copy(update={"metrics": outcome.metrics, "reencoded": True if outcome.reencoded else None})


def write_termination_log(path: Path, error: WorkerError) -> None:
    try:
        path.write_text(termination_message(error.reason, error.message))
    except OSError as exc:  # e.g. no /dev/termination-log outside a pod: the log line below still has it
        log.warning("cannot write termination log", extra={"fields": {"path": str(path), "error": str(exc)}})


def as_worker_error(exc: Exception) -> WorkerError:
    if isinstance(exc, WorkerError):
        return exc
    return Internal(f"unexpected {type(exc).__name__}: {exc}")


def run(env: Mapping[str, str]) -> int:
    guard = SignalGuard()
    guard.install()
    try:
        cfg = WorkerConfig.from_env(env)
    except WorkerError as exc:
        configure_logging(env.get("TRANSKUBE_JOB_NAMESPACE", ""), env.get("TRANSKUBE_JOB_NAME", ""))
        log.error("bad configuration", extra={"fields": {"reason": exc.reason, "error": exc.message}})
        write_termination_log(Path(env.get("TRANSKUBE_TERMINATION_LOG") or DEFAULT_TERMINATION_LOG), exc)
        return exc.exit_code
    configure_logging(cfg.namespace, cfg.name)
    status: StatusWriter = KubeStatusWriter(cfg.namespace, cfg.name) if cfg.status_writes else NullStatusWriter()
    # Test-only fault injection: no API call unless the operator set TRANSKUBE_FAULT_INJECTION=allowed.
    attempt = Attempt(cfg, status, lookup_fault(env, cfg.namespace, cfg.name))
    error: WorkerError | None = None
    log.info("starting", extra={"fields": {"version": __version__, "accelerator": cfg.accelerator,
                                           "outputs": [o.name for o in cfg.spec.outputs]}})
    try:
        try:
            with guard.armed():
                results = attempt.execute()
            # Not armed: the outputs are complete and uploaded, a late SIGTERM must not discard them.
            attempt.finish(results)
        except Exception as exc:
            error = as_worker_error(exc)
            log.error("attempt failed", exc_info=not isinstance(exc, WorkerError), extra={"fields": {
                "reason": error.reason, "exitCode": error.exit_code, "error": error.message}})
            attempt.discard_outputs()
            write_termination_log(cfg.termination_log, error)
    finally:
        attempt.remove_scratch()  # always, success or not: the emptyDir may outlive us on a reused node
    return error.exit_code if error else ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="transkube-worker", description="transkube FFmpeg worker")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the TranscodeJob described by the TRANSKUBE_* environment variables")
    commands.add_parser("cleanup", help="remove the partial outputs of a killed attempt (incomplete multipart "
                                        "uploads, objects written since TRANSKUBE_CLEANUP_SINCE)")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(os.environ)
    if args.command == "cleanup":
        return run_cleanup(os.environ)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
