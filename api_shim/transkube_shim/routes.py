"""The route table: each OpenAPI operation (openapi.OPERATIONS) bound to its handler."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from . import handlers as h
from .openapi import OPERATIONS

HANDLERS: dict[str, Handler] = {
    "createJob": h.create_job,
    "listJobs": h.list_jobs,
    "getJob": h.get_job,
    "deleteJob": h.delete_job,
    "cancelJob": h.cancel_job,
    "pauseJob": h.pause_job,
    "resumeJob": h.resume_job,
    "retryJob": h.retry_job,
    "jobEvents": h.job_events,
    "outputUrl": h.output_url,
    "createUpload": h.create_upload,
    "uploadPartUrls": h.upload_part_urls,
    "completeUpload": h.complete_upload,
    "abortUpload": h.abort_upload,
    "listPresets": h.list_presets,
    "createJobFromPreset": h.create_job_from_preset,
    "queueStats": h.queue_stats,
    "healthz": h.healthz,
    "readyz": h.readyz,
    "metrics": h.metrics,
    "openapi": h.openapi_json,
    "docs": h.docs,
}


def setup(app: web.Application) -> None:
    for op in OPERATIONS:
        app.router.add_route(op.method.upper(), op.path, HANDLERS[op.operation_id], name=op.operation_id)
    app.router.add_get("/docs/app.js", h.docs_js, name="docsJs")
