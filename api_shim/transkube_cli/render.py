"""Pure functions: status -> progress lines, tables and exit codes. No I/O here.

The progress bar is hand-written rather than taken from tqdm/rich: what it shows is the worker's own progress
(stage, percent, fps, speed, ETA from the CR's status, not a counter the CLI advances), so a library would
only draw the bar, and these ~20 lines are easy to unit-test and add no dependency to the images."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

Obj = Mapping[str, Any]

FINAL_PHASES = ("Succeeded", "Failed", "Cancelled")


class Exit:
    """Exit codes of the CLI (docs/cli.md)."""

    OK = 0  # watch: Succeeded; other commands: done
    FAILED = 1  # watch: the job Failed; outputs: a checksum mismatch
    USAGE = 2  # bad flags or a spec the models reject (argparse uses 2 too)
    CANCELLED = 3  # watch: the job was Cancelled
    GONE = 4  # watch: the job was deleted (or does not exist)
    ERROR = 5  # the API server, the shim or storage refused or failed


def exit_code(phase: str | None, deleted: bool = False) -> int | None:
    """The watch's exit code for a job in this phase; None while it is not finished."""
    if deleted:
        return Exit.GONE
    return {"Succeeded": Exit.OK, "Failed": Exit.FAILED, "Cancelled": Exit.CANCELLED}.get(phase or "")


def manual_retry(job: Obj) -> int:
    return int((job.get("spec") or {}).get("manualRetry") or 0)


def retry_pending(job: Obj) -> bool:
    """A Failed job with spec.manualRetry raised (a retry requested) that the operator has not acted on yet; only
    Failed jobs are retried, so nothing else is kept waiting for it."""
    status = job.get("status") or {}
    return status.get("phase") == "Failed" and manual_retry(job) > int(status.get("manualRetries") or 0)


def job_exit_code(job: Obj) -> int | None:
    """exit_code for a whole job: a Failed job with a retry pending is about to run again, not finished."""
    if retry_pending(job):
        return None
    return exit_code((job.get("status") or {}).get("phase"))


def phase_of(status: Obj | None) -> str:
    """The phase; a job the operator has not seen yet waits to be admitted (Queued)."""
    return str((status or {}).get("phase") or "Queued")


def queue_text(status: Obj | None) -> str:
    """Where a Queued job waits: `position 3 in cpu (PoolCapacity)`; '' when not queued or unknown."""
    queue = (status or {}).get("queue") or {}
    if phase_of(status) != "Queued" or not queue:
        return ""
    text = f"position {queue['position']}" if queue.get("position") is not None else "waiting"
    if queue.get("pool"):
        text += f" in {queue['pool']}"
    return text + (f" ({queue['reason']})" if queue.get("reason") else "")


def failure_text(status: Obj | None) -> str:
    """`InputNotFound (BadInput)`: the reason and, for failed jobs, the failure category."""
    status = status or {}
    reason, category = status.get("reason"), status.get("failureCategory")
    if reason and category:
        return f"{reason} ({category})"
    return str(reason or category or "")


def bar(percent: float, width: int = 24) -> str:
    percent = min(max(percent, 0.0), 100.0)
    filled = round(width * percent / 100)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def format_duration(seconds: float | None) -> str:
    """75 -> 1m15s, 3725 -> 1h02m, None -> '-'."""
    if seconds is None or seconds < 0:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def progress_line(name: str, status: Obj | None, width: int = 24) -> str:
    """One line for a job: `clip  Running  Transcoding [#####-----]  41.6%  120 fps  2.10x  ETA 12s`."""
    status = status or {}
    phase = phase_of(status)
    progress = status.get("progress") or {}
    stage = progress.get("stage") or ("Done" if phase == "Succeeded" else "Pending")
    percent = float(progress.get("percent") or 0)
    if phase == "Succeeded":
        percent = 100.0
    parts = [name, phase, stage, bar(percent, width), f"{percent:5.1f}%"]
    if progress.get("fps") is not None and phase == "Running":
        parts.append(f"{float(progress['fps']):.0f} fps")
    if progress.get("speed") is not None and phase == "Running":
        parts.append(f"{float(progress['speed']):.2f}x")
    if phase == "Running":
        eta = progress.get("eta") or (format_duration(progress["etaSeconds"])
                                      if progress.get("etaSeconds") is not None else None)
        if eta:
            parts.append(f"ETA {eta}")
    if phase == "Queued" and (where := queue_text(status)):
        parts.append(where)
    if phase in ("Failed", "Cancelled") and (why := failure_text(status)):
        parts.append(why)
    return "  ".join(parts)


def final_message(name: str, status: Obj | None, deleted: bool = False) -> str:
    """The last line of `watch`: what happened, and why when it failed."""
    status = status or {}
    if deleted:
        return f"transcodejob {name} was deleted"
    phase = status.get("phase")
    if phase == "Succeeded":
        outputs = status.get("outputs") or []
        return f"transcodejob {name} Succeeded: {len(outputs)} output(s) written"
    reason = status.get("reason") or phase or "Unknown"
    message = status.get("message") or ""
    return f"transcodejob {name} {phase}: {reason}" + (f": {message}" if message else "")


def upload_line(label: str, done: int, total: int | None, width: int = 24) -> str:
    if not total:
        return f"{label}  {format_bytes(done)}"
    percent = 100.0 * done / total
    return f"{label}  {bar(percent, width)} {percent:5.1f}%  {format_bytes(done)} / {format_bytes(total)}"


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def age(created: str | None, now: datetime | None = None) -> str:
    start = parse_time(created)
    if start is None:
        return "-"
    return format_duration(((now or datetime.now(UTC)) - start).total_seconds())


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """kubectl-style columns: left-aligned, three spaces apart."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [headers, *rows]]
    return "\n".join(lines)


def phase_cell(job: Obj) -> str:
    """The PHASE column, kubectl-style without spaces: `Queued:3` (queue position), `Failed:retrying` (a
    retry requested, not started yet)."""
    status = job.get("status") or {}
    phase = phase_of(status)
    position = (status.get("queue") or {}).get("position")
    if phase == "Queued" and position is not None:
        return f"Queued:{position}"
    if phase == "Failed" and retry_pending(job):
        return "Failed:retrying"
    return phase


def job_rows(jobs: Sequence[Obj], now: datetime | None = None) -> list[list[str]]:
    """Jobs as `list` shows them: NAME PHASE STAGE PROGRESS ETA REASON AGE (jobs in the CR's own shape:
    {metadata, spec, status}). REASON of a failed job is `category/reason`, e.g. `BadInput/InputNotFound`."""
    rows = []
    for job in jobs:
        meta, status = job.get("metadata") or {}, job.get("status") or {}
        progress = status.get("progress") or {}
        percent = 100.0 if status.get("phase") == "Succeeded" else progress.get("percent")
        eta = progress.get("eta") if status.get("phase") == "Running" else None
        reason = "/".join(str(v) for v in (status.get("failureCategory"), status.get("reason")) if v)
        rows.append([str(meta.get("name", "")), phase_cell(job), str(progress.get("stage") or "-"),
                     f"{float(percent):.1f}" if percent is not None else "-", str(eta or "-"),
                     reason or "-", age(meta.get("creationTimestamp"), now)])
    return rows


JOB_HEADERS = ("NAME", "PHASE", "STAGE", "PROGRESS", "ETA", "REASON", "AGE")
OUTPUT_HEADERS = ("NAME", "URI", "SIZE", "CHECKSUM")
ATTEMPT_HEADERS = ("ATTEMPT", "ROUND", "POD", "EXIT", "CLASS", "REASON", "DURATION")


def attempt_rows(status: Obj | None) -> list[list[str]]:
    """status.attemptHistory: one row per attempt, across manual retries (ROUND 0 is the first run)."""
    rows = []
    for a in (status or {}).get("attemptHistory") or []:
        start, finish = parse_time(a.get("startTime")), parse_time(a.get("finishTime"))
        took = format_duration((finish - start).total_seconds()) if start and finish else "-"
        exit_code = a.get("exitCode")
        rows.append([str(a.get("attempt", "-")), str(a.get("round", 0)), str(a.get("pod") or "-"),
                     str(exit_code) if exit_code is not None else "-", str(a.get("failureClass") or "-"),
                     str(a.get("reason") or "-"), took])
    return rows


def webhook_lines(job: Obj) -> list[str]:
    """`notify: 3 delivered, 1 pending` per subscription (from status.webhookDeliveries), `(disabled: ...)`."""
    status = job.get("status") or {}
    states = {w.get("name"): w for w in status.get("webhooks") or []}
    lines = []
    for hook in (job.get("spec") or {}).get("webhooks") or []:
        name = hook.get("name")
        counts = Counter(str(d.get("state", "")).lower() for d in status.get("webhookDeliveries") or []
                         if d.get("webhook") == name)
        text = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no deliveries"
        state = states.get(name) or {}
        if state.get("disabled"):
            text += f" (disabled: {state.get('disabledReason') or 'receiver gone'})"
        lines.append(f"{name}: {text}")
    return lines


def output_rows(status: Obj | None) -> list[list[str]]:
    rows = []
    for out in (status or {}).get("outputs") or []:
        size = out.get("sizeBytes")
        rows.append([str(out.get("name", "")), str(out.get("uri", "")), str(size) if size is not None else "-",
                     str(out.get("checksum") or "-")])
    return rows


def describe(job: Obj) -> str:
    """`get NAME`: the facts a person wants first."""
    meta, spec, status = job.get("metadata") or {}, job.get("spec") or {}, job.get("status") or {}
    phase = phase_of(status)
    pool = (status.get("queue") or {}).get("pool") or spec.get("pool")
    lines = [f"Name:       {meta.get('name', '')}", f"Namespace:  {meta.get('namespace', '-')}",
             f"Input:      {(spec.get('input') or {}).get('uri', '-')}",
             f"Phase:      {phase}" + (f", {where}" if (where := queue_text(status)) else ""),
             f"Priority:   {spec.get('priority', 0)}" + (f"  pool {pool}" if pool else "")]
    if retry_pending(job):
        lines.append(f"Retry:      requested (manualRetry {manual_retry(job)}), not started yet")
    if status.get("failureCategory"):
        lines.append(f"Category:   {status['failureCategory']}")
    if status.get("reason"):
        lines.append(f"Reason:     {status['reason']}")
    if status.get("message"):
        lines.append(f"Message:    {status['message']}")
    lines.append(f"Progress:   {progress_line(str(meta.get('name', '')), status).split('  ', 1)[1]}")
    lines.append(f"Attempts:   {status.get('attempts', 0)}"
                 + (f" ({status['manualRetries']} manual retries)" if status.get("manualRetries") else ""))
    if status.get("nextAttemptTime"):
        lines.append(f"Next try:   {status['nextAttemptTime']}")
    if status.get("jobName"):
        lines.append(f"Job:        {status['jobName']}")
    history = attempt_rows(status)
    if history:
        lines.append("History:")
        lines.extend("  " + line for line in table(ATTEMPT_HEADERS, history).splitlines())
    hooks = webhook_lines(job)
    if hooks:
        lines.append("Webhooks:")
        lines.extend("  " + line for line in hooks)
    outs = output_rows(status)
    if outs:
        lines.append("Outputs:")
        lines.extend("  " + line for line in table(OUTPUT_HEADERS, outs).splitlines())
    else:
        planned = ", ".join(f"{o.get('name')} -> {o.get('uri')}" for o in spec.get("outputs") or [])
        lines.append(f"Outputs:    {planned} (not written yet)")
    return "\n".join(lines)


def checksum_ok(expected: str | None, sha256_hex: str) -> bool | None:
    """True/False when the status carries a `sha256:` checksum, None when there is none to compare."""
    if not expected or not expected.startswith("sha256:"):
        return None
    return expected.removeprefix("sha256:").lower() == sha256_hex.lower()


def shim_job_to_cr(view: Obj) -> dict[str, Any]:
    """The shim's Job view ({name, createdAt, spec, status, ...}) -> the CR's shape the renderers take."""
    return {"metadata": {"name": view.get("name", ""), "creationTimestamp": view.get("createdAt"),
                         "uid": view.get("uid"), "resourceVersion": view.get("resourceVersion")},
            "spec": view.get("spec") or {}, "status": view.get("status") or {}}


def fold_event(status: dict[str, Any], event: str, data: Obj) -> dict[str, Any]:
    """One shim SSE event folded into the status we show: `state`/`completed`/`failed`/`cancelled` carry the
    job, `phase` and `progress` the parts that changed."""
    if event in ("state", "completed", "failed", "cancelled"):
        return dict(data.get("status") or {})
    new = dict(status)
    if event == "phase":
        new["phase"] = data.get("to")
        for key in ("reason", "message"):
            if data.get(key) is not None:
                new[key] = data[key]
    elif event == "progress":
        new["progress"] = dict(data)
    elif event == "stage":
        new["progress"] = {**(new.get("progress") or {}), "stage": data.get("to")}
    return new


def now_utc() -> datetime:
    return datetime.now(UTC)
