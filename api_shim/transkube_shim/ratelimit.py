"""Per-identity token buckets. State is per process: with N replicas behind a load balancer a key gets up
to N times its rate (quotas, by contrast, are counted from the CRs and agree across replicas)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int  # until the bucket is full again
    retry_after: int  # until one token is available (0 when allowed)

    def headers(self) -> dict[str, str]:
        out = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
               "X-RateLimit-Reset": str(self.reset_seconds)}
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after)
        return out


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    capacity: int
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, capacity: int, now: float) -> TokenBucket:
        return cls(rate, capacity, float(capacity), now)

    def take(self, now: float, cost: float = 1.0) -> Decision:
        self.tokens = min(float(self.capacity), self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        allowed = self.tokens >= cost
        if allowed:
            self.tokens -= cost
        missing = self.capacity - self.tokens
        reset = math.ceil(missing / self.rate) if self.rate > 0 else 0
        retry = 0 if allowed else max(1, math.ceil((cost - self.tokens) / self.rate) if self.rate > 0 else 3600)
        return Decision(allowed, self.capacity, int(self.tokens), reset, retry)

    def is_full(self, now: float) -> bool:
        return self.tokens + max(0.0, now - self.updated) * self.rate >= self.capacity


class RateLimiter:
    def __init__(self, max_keys: int = 100_000) -> None:
        self.buckets: dict[str, TokenBucket] = {}
        self.max_keys = max_keys

    def take(self, key: str, rate: float, capacity: int, now: float) -> Decision:
        bucket = self.buckets.get(key)
        if bucket is None or bucket.rate != rate or bucket.capacity != capacity:
            if len(self.buckets) >= self.max_keys:
                self.prune(now)
            bucket = self.buckets[key] = TokenBucket.full(rate, capacity, now)
        return bucket.take(now)

    def prune(self, now: float) -> None:
        """Forget full buckets: they are indistinguishable from new ones."""
        for key in [k for k, b in self.buckets.items() if b.is_full(now)]:
            del self.buckets[key]
