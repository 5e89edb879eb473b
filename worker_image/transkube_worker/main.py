"""Entry point of `transkube-worker`: `transkube-worker run` executes one attempt of the TranscodeJob described
by the environment (see config.py). Orchestration only; the decisions live in the other modules.

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
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from transkube_api.constants import ExitCode
from transkube_api.models import InputFacts, OutputResult, Progress, TranscodeJobSpec

from . import __version__
from .config import DEFAULT_TERMINATION_LOG, WorkerConfig
from .errors import Internal, WorkerError, termination_message
from .ffmpeg_args import Accelerator, build_argv, output_paths
from .logs import configure_logging
from .probe import probe_input, probe_output
from .progress import ProgressReporter, ProgressSample, compute_progress, utcnow
from .signals import SignalGuard
from .status_writer import KubeStatusWriter, NullStatusWriter, StatusWriter
from .storage import (
    CONTENT_TYPES,
    ByteCounter,
    S3Location,
    Upload,
    delete_objects,
    download,
    head_size,
    make_client,
    parse_s3_uri,
    sha256_file,
    transfer_config,
    upload_all,
)
from .transcode import run_ffmpeg

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

log = logging.getLogger("transkube_worker")

SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


def transcode_step(spec: TranscodeJobSpec, input_path: Path, outputs: dict[str, Path], facts: InputFacts,
                   accelerator: Accelerator, reporter: ProgressReporter) -> list[str]:
    """Build the argv and run ffmpeg on local files, reporting progress; returns the argv it ran. This is
    also what bench/worker_overhead.py measures, so it stays free of storage and Kubernetes."""
    argv = build_argv(spec, input_path, outputs, facts, accelerator)
    duration = facts.duration_seconds
    reporter.update(compute_progress("Transcoding", utcnow(), duration_seconds=duration))

    def on_sample(sample: ProgressSample) -> None:
        reporter.update(compute_progress("Transcoding", utcnow(), sample=sample, duration_seconds=duration))

    run_ffmpeg(argv, on_sample)
    return argv


class Attempt:
    """One run of the job. Keeps what cleanup needs: the scratch dir and the objects it started uploading."""

    def __init__(self, cfg: WorkerConfig, status: StatusWriter) -> None:
        self.cfg = cfg
        self.status = status
        # Done goes through write_final (retried: it carries status.outputs); the rest is best-effort.
        self.reporter = ProgressReporter(self._write, cfg.progress_interval)
        self.scratch: Path | None = None
        self.client: S3Client | None = None
        self.submitted: list[S3Location] = []

    def _write(self, progress: Progress) -> None:
        if progress.stage == "Done":
            self.status.write_final(progress)
        else:
            self.status.write_progress(progress)

    def execute(self) -> list[OutputResult]:
        """Everything up to complete, uploaded outputs."""
        spec = self.cfg.spec
        self.cfg.scratch_dir.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix="transkube-", dir=self.cfg.scratch_dir))
        self.client = make_client()
        input_path = self._download(self.client, parse_s3_uri(spec.input.uri))
        facts = self._probe(input_path)
        out_dir = self.scratch / "out"
        out_dir.mkdir()
        outputs = output_paths(spec, out_dir)
        started = time.monotonic()
        argv = transcode_step(spec, input_path, outputs, facts, self.cfg.accelerator, self.reporter)
        log.info("transcoded", extra={"fields": {"seconds": round(time.monotonic() - started, 2), "argv": argv}})
        return self._upload(self.client, outputs)

    def finish(self, results: list[OutputResult]) -> None:
        self.status.attach_outputs(results)
        self.reporter.update(compute_progress("Done", utcnow()))
        log.info("done", extra={"fields": {"outputs": [r.wire() for r in results]}})

    def _download(self, client: S3Client, loc: S3Location) -> Path:
        assert self.scratch is not None
        self.reporter.update(compute_progress("Downloading", utcnow()))
        size = head_size(client, loc)
        suffix = Path(loc.key).suffix
        # Keep a plain extension: it helps ffmpeg with raw formats (.h264, .aac) that have no magic bytes.
        dest = self.scratch / ("input" + (suffix if SAFE_SUFFIX.fullmatch(suffix) else ""))
        counter = ByteCounter(size)
        started = time.monotonic()

        def tick() -> None:
            self.reporter.update(compute_progress("Downloading", utcnow(), done_bytes=counter.done, total_bytes=size))

        download(client, loc, dest, counter, transfer_config(), tick)
        log.info("downloaded", extra={"fields": {"uri": loc.uri, "bytes": size,
                                                 "seconds": round(time.monotonic() - started, 2)}})
        return dest

    def _probe(self, path: Path) -> InputFacts:
        self.reporter.update(compute_progress("Probing", utcnow()))
        facts = probe_input(path)
        # Written together with the Transcoding stage change, one request for both.
        self.status.attach_input(facts)
        log.info("probed", extra={"fields": {"input": facts.wire()}})
        return facts

    def _upload(self, client: S3Client, outputs: dict[str, Path]) -> list[OutputResult]:
        spec = self.cfg.spec
        uploads = [Upload(outputs[o.name], parse_s3_uri(o.uri), CONTENT_TYPES[o.container]) for o in spec.outputs]
        total = sum(u.path.stat().st_size for u in uploads)
        counter = ByteCounter()
        checksums: dict[str, str] = {}

        def tick() -> None:
            self.reporter.update(compute_progress("Uploading", utcnow(), done_bytes=counter.done, total_bytes=total))

        def hash_outputs() -> None:
            # Runs while the transfer threads upload: the checksum costs no extra wall time.
            for upload in uploads:
                checksums[upload.location.uri] = sha256_file(upload.path)
                tick()

        self.reporter.update(compute_progress("Uploading", utcnow(), done_bytes=0, total_bytes=total))
        started = time.monotonic()
        upload_all(client, uploads, counter, transfer_config(), tick, self.submitted.append, hash_outputs)
        log.info("uploaded", extra={"fields": {"bytes": total, "seconds": round(time.monotonic() - started, 2)}})
        return [probe_output(outputs[o.name], name=o.name, uri=o.uri, checksum=checksums[o.uri])
                for o in spec.outputs]

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
    attempt = Attempt(cfg, status)
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
    args = parser.parse_args(argv)
    if args.command != "run":
        parser.print_help(sys.stderr)
        return 2
    return run(os.environ)


if __name__ == "__main__":
    sys.exit(main())
