"""Benchmark: what does the worker's transcode path cost on top of bare ffmpeg?

Generates a ~20 s 640x360 test clip with audio, then times, on the same local input and with the same argv:
  (a) bare ffmpeg, running exactly the argv `build_argv` produces for a representative spec;
  (b) the worker's transcode step (`transkube_worker.main.transcode_step`): the same argv plus `-progress`
      parsing, progress computation and a ProgressReporter with a no-op writer (no S3, no Kubernetes).
Each N times (--runs, default 3), alternating which goes first, and prints wall times, medians and the
worker/bare ratio.

    .venv/bin/python bench/worker_overhead.py [--runs 3] [--seconds 20] [--interval 2.0]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from transkube_api.models import InputFacts, Progress, TranscodeJobSpec
from transkube_worker.ffmpeg_args import build_argv, output_paths
from transkube_worker.main import transcode_step
from transkube_worker.probe import probe_input
from transkube_worker.progress import ProgressReporter
from transkube_worker.transcode import ffmpeg_env

# Representative: one 720p-ish h264 CRF output with AAC audio (x264 preset left at its default, medium).
SPEC = TranscodeJobSpec.model_validate({
    "input": {"uri": "s3://bench/in.mp4"},
    "outputs": [{"name": "hd", "uri": "s3://bench/hd.mp4", "container": "mp4",
                 "video": {"codec": "h264", "resolution": "720p", "crf": 23},
                 "audio": {"codec": "aac", "bitrate": "128k"}}],
})


def make_clip(path: Path, seconds: int) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=440",
                    "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", str(path)],
                   check=True)


def run_bare(argv: list[str]) -> float:
    started = time.perf_counter()
    # Same environment as the worker gives ffmpeg; -progress output goes nowhere.
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env=ffmpeg_env(), check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"bare ffmpeg failed: {proc.stderr.decode(errors='replace')[-500:]}")
    return elapsed


def run_worker(input_path: Path, outputs: dict[str, Path], facts: InputFacts, interval: float,
               expected_argv: list[str]) -> tuple[float, int]:
    writes: list[Progress] = []

    def noop_writer(progress: Progress) -> None:
        writes.append(progress)  # stands in for the status PATCH; keeps a count

    reporter = ProgressReporter(noop_writer, min_interval=interval)
    started = time.perf_counter()
    argv = transcode_step(SPEC, input_path, outputs, facts, "cpu", reporter)
    elapsed = time.perf_counter() - started
    if argv != expected_argv:
        sys.exit("the worker built a different argv than the bare run")
    return elapsed, len(writes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="runs of each variant (default 3)")
    parser.add_argument("--seconds", type=int, default=20, help="test clip length (default 20)")
    parser.add_argument("--interval", type=float, default=2.0, help="progress write interval (default 2.0)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="transkube-bench-") as tmp:
        work = Path(tmp)
        clip = work / "in.mp4"
        make_clip(clip, args.seconds)
        facts = probe_input(clip)
        outputs = output_paths(SPEC, work)
        argv = build_argv(SPEC, clip, outputs, facts, "cpu")
        print(f"clip: {facts.duration_seconds}s {facts.width}x{facts.height} {facts.video_codec}/{facts.audio_codec}")
        print("argv:", " ".join(argv))

        bare: list[float] = []
        worker: list[float] = []
        for i in range(args.runs):
            # Alternate the order so warm caches / CPU boost do not favour one side.
            order = ("bare", "worker") if i % 2 == 0 else ("worker", "bare")
            for kind in order:
                if kind == "bare":
                    bare.append(run_bare(argv))
                    print(f"run {i + 1} bare   {bare[-1]:7.3f} s")
                else:
                    elapsed, writes = run_worker(clip, outputs, facts, args.interval, argv)
                    worker.append(elapsed)
                    print(f"run {i + 1} worker {elapsed:7.3f} s  ({writes} progress writes)")

        med_bare, med_worker = statistics.median(bare), statistics.median(worker)
        print(f"median bare   {med_bare:7.3f} s")
        print(f"median worker {med_worker:7.3f} s")
        print(f"ratio worker/bare {med_worker / med_bare:.4f} ({(med_worker / med_bare - 1) * 100:+.2f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
