"""`transkube` / `kubectl transcode`: the command line. Argument parsing and printing; the rest is in spec.py
(flags -> spec), render.py (status -> text and exit codes) and backends.py (Kubernetes or the shim)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import yaml

from . import render
from .backends import Backend, CliError, KubeBackend, ShimBackend, sha256_file
from .render import Exit
from .spec import SpecError, build_submit, preset_names

MIB = 1024 * 1024


class Line:
    """A status line on stderr: rewritten in place on a terminal, one line per change otherwise (logs, CI)."""

    def __init__(self, stream: IO[str] | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.enabled = enabled
        self.last = ""
        self.lock = threading.Lock()

    def show(self, text: str) -> None:
        with self.lock:
            if not self.enabled or text == self.last:
                return
            self.last = text
            if self.tty:
                self.stream.write("\r" + text + "\x1b[K")
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def done(self) -> None:
        with self.lock:
            if self.enabled and self.tty and self.last:
                self.stream.write("\n")
                self.stream.flush()
            self.last = ""


class Transfer:
    """boto3/requests progress callbacks (bytes since the last call, maybe from several threads) -> a bar."""

    def __init__(self, line: Line, label: str, total: int | None) -> None:
        self.line, self.label, self.total, self.done = line, label, total, 0
        self.lock = threading.Lock()
        self.last_percent = -1

    def __call__(self, n: int) -> None:
        with self.lock:
            self.done += n
            percent = int(100 * self.done / self.total) if self.total else self.done // MIB
            if percent == self.last_percent and not self.line.tty:
                return
            self.last_percent = percent
            text = render.upload_line(self.label, self.done, self.total)
        self.line.show(text)


def backend(args: argparse.Namespace) -> Backend:
    url = args.api_url or os.environ.get("TRANSKUBE_API_URL")
    if url:
        key = args.api_key or os.environ.get("TRANSKUBE_API_KEY")
        if not key:
            raise CliError("--api-url needs an API key: --api-key or TRANSKUBE_API_KEY", Exit.USAGE)
        return ShimBackend(url, key)
    return KubeBackend(args.kubeconfig, args.context, args.namespace, args.endpoint_url)


# ---- commands -------------------------------------------------------------------------------------------


def cmd_upload(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such file", Exit.USAGE)
    be = backend(args)
    line = Line(enabled=not args.quiet)
    uri = be.upload(path, args.dest, args.part_size * MIB, Transfer(line, f"upload {path.name}",
                                                                     path.stat().st_size))
    line.done()
    print(uri)
    return Exit.OK


def cmd_submit(args: argparse.Namespace) -> int:
    manifest = None
    if args.filename:
        text = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text()
        try:
            manifest = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError(f"not YAML: {exc}", args.filename) from exc
    # Presets are read from the backend: their type and container choose default URIs, and the merge each
    # preset output will get from the operator is checked before anything is created.
    names = preset_names(manifest, args.preset)
    be: Backend | None = backend(args) if names else None
    presets = {name: be.preset(name) for name in names} if be is not None else {}
    request = build_submit(manifest=manifest, input_uri=args.input, outputs=args.output or (), name=args.name,
                           namespace=args.namespace, accelerator=args.accelerator, fallback=args.fallback,
                           retry_limit=args.retry_limit, deadline_seconds=args.deadline, suspend=args.suspend,
                           preset=args.preset, presets=presets, priority=args.priority, pool=args.pool)
    if args.dry_run:
        print(yaml.safe_dump(request.manifest(), sort_keys=False), end="")
        return Exit.OK
    be = be or backend(args)
    created = be.create(request)
    name = created["metadata"]["name"]
    print(f"transcodejob {name} created", file=sys.stderr)
    print(name)
    if args.watch:
        return watch(be, name, quiet=args.quiet)
    return Exit.OK


def watch(be: Backend, name: str, quiet: bool = False) -> int:
    line = Line(enabled=not quiet)
    last: Any = None
    for obj in be.watch(name):
        if obj is None:
            line.done()
            print(render.final_message(name, None, deleted=True), file=sys.stderr)
            return Exit.GONE
        last = obj
        status = obj.get("status") or {}
        line.show(render.progress_line(name, status))
        code = render.job_exit_code(obj)
        if code is not None:
            line.done()
            print(render.final_message(name, status), file=sys.stdout if code == Exit.OK else sys.stderr)
            return code
    line.done()
    raise CliError(f"watch {name} ended before the job finished (last phase "
                   f"{((last or {}).get('status') or {}).get('phase')})")


def cmd_watch(args: argparse.Namespace) -> int:
    return watch(backend(args), args.name, quiet=args.quiet)


def cmd_get(args: argparse.Namespace) -> int:
    job = backend(args).get(args.name)
    if args.output == "json":
        print(json.dumps(job, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(job, sort_keys=False), end="")
    else:
        print(render.describe(job))
    return Exit.OK


def cmd_list(args: argparse.Namespace) -> int:
    jobs = backend(args).list_jobs()
    if args.output == "json":
        print(json.dumps({"items": jobs}, indent=2))
    elif args.output == "name":
        print("\n".join(j["metadata"]["name"] for j in jobs))
    elif jobs:
        jobs.sort(key=lambda j: str(j["metadata"].get("creationTimestamp") or ""), reverse=True)
        print(render.table(render.JOB_HEADERS, render.job_rows(jobs)))
    else:
        print("No transcodejobs found.", file=sys.stderr)
    return Exit.OK


def cmd_outputs(args: argparse.Namespace) -> int:
    be = backend(args)
    job = be.get(args.name)
    status = job.get("status") or {}
    rows = render.output_rows(status)
    if not rows:
        print(f"transcodejob {args.name} has written no outputs yet (phase {render.phase_of(status)})",
              file=sys.stderr)
        return Exit.FAILED if args.download else Exit.OK
    print(render.table(render.OUTPUT_HEADERS, rows))
    if not args.download:
        return Exit.OK
    target = Path(args.download)
    target.mkdir(parents=True, exist_ok=True)
    line = Line(enabled=not args.quiet)
    code = Exit.OK
    for out in status.get("outputs") or []:
        files = be.download(job, out, target, Transfer(line, f"download {out['name']}", out.get("sizeBytes")))
        line.done()
        for path in files:
            verdict = ""
            if len(files) == 1 and not str(out["uri"]).endswith("/"):
                ok = render.checksum_ok(out.get("checksum"), sha256_file(path))
                if ok is False:
                    code = Exit.FAILED
                    path.unlink()
                    print(f"{out['name']}: checksum MISMATCH ({out.get('checksum')}); {path} removed",
                          file=sys.stderr)
                    continue
                verdict = "  sha256 ok" if ok else "  (no checksum to verify)"
            print(f"{out['name']}: {path}{verdict}", file=sys.stderr)
    return code


def cmd_retry(args: argparse.Namespace) -> int:
    be = backend(args)
    obj = be.retry(args.name)
    print(f"transcodejob {obj['metadata']['name']} retry requested (manualRetry {render.manual_retry(obj)})")
    if args.watch:
        return watch(be, args.name, quiet=args.quiet)
    return Exit.OK


def cmd_flag(args: argparse.Namespace) -> int:
    obj = backend(args).set_flag(args.name, args.command)
    done = {"cancel": "cancelled", "suspend": "suspended", "resume": "resumed"}[args.command]
    print(f"transcodejob {obj['metadata']['name']} {done}")
    return Exit.OK


# ---- parser ---------------------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    d: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    g = parser.add_argument_group("connection")
    g.add_argument("-n", "--namespace", help="namespace (direct backend; default: the kubeconfig context's)",
                   **({"default": None} | d))
    g.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)",
                   **({"default": None} | d))
    g.add_argument("--context", help="kubeconfig context", **({"default": None} | d))
    g.add_argument("--endpoint-url", help="S3 endpoint for upload/download in the direct backend "
                   "(default: $AWS_ENDPOINT_URL_S3, else AWS)", **({"default": None} | d))
    g.add_argument("--api-url", help="use the REST shim at this URL instead of Kubernetes ($TRANSKUBE_API_URL)",
                   **({"default": None} | d))
    g.add_argument("--api-key", help="the shim's API key ($TRANSKUBE_API_KEY)", **({"default": None} | d))
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars", **({"default": False} | d))


def parser() -> argparse.ArgumentParser:
    prog = "kubectl transcode" if Path(sys.argv[0]).name.startswith("kubectl-") else "transkube"
    p = argparse.ArgumentParser(prog=prog, description="Upload media, run TranscodeJobs and fetch their outputs, "
                                "directly on Kubernetes or through the transkube REST shim.")
    _common(p, suppress=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text, description=help_text)
        _common(c, suppress=True)
        return c

    c = command("upload", "Upload a local file to S3 (multipart, with a progress bar); prints its s3:// URI.")
    c.add_argument("file")
    c.add_argument("dest", nargs="?", help="s3://bucket/key (a key ending in / gets the file's name); "
                                           "omitted with --api-url, where the shim chooses")
    c.add_argument("--part-size", type=int, default=8, metavar="MIB", help="multipart part size in MiB (8)")
    c.set_defaults(func=cmd_upload)

    c = command("submit", "Create a TranscodeJob from flags or a manifest (validated before it is sent).")
    c.add_argument("-f", "--filename", help="a TranscodeJob manifest (or just its spec) in YAML; - for stdin")
    c.add_argument("--input", help="the source, s3://bucket/key")
    c.add_argument("--output", action="append", metavar="SPEC",
                   help="an output: container=mp4,height=720 (name and uri default: see docs/cli.md), or "
                        "name=web,uri=s3://b/k.mp4,container=mp4,vcodec=h264,height=720,crf=23; repeat for several")
    c.add_argument("--preset", help="a TranscodePreset every --output starts from (one output if none is given); "
                                    "the operator merges it and records the result in status.resolvedOutputs")
    c.add_argument("--name", help="the TranscodeJob's name (default: generated from the input's name)")
    c.add_argument("--accelerator", choices=("cpu", "nvidia"))
    c.add_argument("--fallback", choices=("wait", "cpu"), help="for nvidia: wait for a GPU, or fall back to CPU")
    c.add_argument("--retry-limit", type=int)
    c.add_argument("--deadline", type=int, metavar="SECONDS", help="wall-clock limit of the whole job")
    c.add_argument("--suspend", action="store_true", help="create it suspended")
    c.add_argument("--priority", type=int, metavar="N",
                   help="admission order in its pool, -50..50 (higher first; default 0)")
    c.add_argument("--pool", help="the capacity pool to queue in (default: the operator's pool for the accelerator)")
    c.add_argument("--dry-run", action="store_true", help="validate and print the manifest, create nothing")
    c.add_argument("--watch", "-w", action="store_true", help="then watch it (exit code as for watch)")
    c.set_defaults(func=cmd_submit)

    c = command("watch", "Follow a job's progress until it finishes: exit 0 on Succeeded, 1 Failed, 3 Cancelled.")
    c.add_argument("name")
    c.set_defaults(func=cmd_watch)

    c = command("get", "Show one job.")
    c.add_argument("name")
    c.add_argument("-o", "--output", choices=("json", "yaml"), help="the whole object")
    c.set_defaults(func=cmd_get)

    c = command("list", "List jobs (newest first).")
    c.add_argument("-o", "--output", choices=("json", "name"))
    c.set_defaults(func=cmd_list)

    c = command("outputs", "Print a job's outputs (URI, size, checksum); --download fetches and verifies them.")
    c.add_argument("name")
    c.add_argument("--download", metavar="DIR", help="download into DIR and verify each file's sha256")
    c.set_defaults(func=cmd_outputs)

    c = command("retry", "Retry a Failed job in place (spec.manualRetry + 1): a fresh attempt under the same name, "
                         "the attempt history kept.")
    c.add_argument("name")
    c.add_argument("--watch", "-w", action="store_true", help="then watch it (exit code as for watch)")
    c.set_defaults(func=cmd_retry)

    for verb, text in (("cancel", "Stop a job for good (spec.cancel)."), ("suspend", "Pause a job (spec.suspend)."),
                       ("resume", "Resume a suspended job.")):
        c = command(verb, text)
        c.add_argument("name")
        c.set_defaults(func=cmd_flag)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except SpecError as exc:
        print(f"error: invalid spec: {exc}", file=sys.stderr)
        return Exit.USAGE
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
