"""Prometheus metrics, in a registry per app (so several apps in one process, as in tests, don't clash)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("transkube_shim_requests", "HTTP requests served.",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("transkube_shim_request_duration_seconds", "HTTP request latency.",
                                 ["method", "route"], registry=r,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.sse_connections = Gauge("transkube_shim_sse_connections", "Open Server-Sent Events streams.",
                                     registry=r)
        self.upstream_watches = Gauge("transkube_shim_upstream_watches",
                                      "Open watch connections to the Kubernetes API server.", registry=r)
        self.watch_events = Counter("transkube_shim_watch_events", "TranscodeJob watch events received.",
                                    ["type"], registry=r)
        self.watch_restarts = Counter("transkube_shim_watch_restarts", "Times the watch was re-established.",
                                      ["reason"], registry=r)
        self.cache_stale_seconds = Gauge("transkube_shim_cache_stale_seconds",
                                         "Seconds the job cache has been out of touch with the API server "
                                         "(0 while its watch is healthy); reads keep serving its last state.",
                                         registry=r)
        self.cached_jobs = Gauge("transkube_shim_cached_jobs", "TranscodeJobs in the watch-fed cache.", registry=r)
        self.rate_limited = Counter("transkube_shim_rate_limited", "Requests refused by the rate limiter.",
                                    registry=r)
        self.quota_rejections = Counter("transkube_shim_quota_rejections", "Job creations refused by a quota.",
                                        ["quota"], registry=r)
        self.jobs_created = Counter("transkube_shim_jobs_created", "TranscodeJobs created.", ["via"], registry=r)
        self.job_retries = Counter("transkube_shim_job_retries", "Manual retries requested (spec.manualRetry raised).",
                                   registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
