"""Canvas's request throttle: a leaky bucket per access token (app/middleware/request_throttle.rb).

Each request adds an up-front cost while it runs (refunded at its end) and its real cost when it ends; the
bucket leaks `outflow` units a second. A request is refused when the bucket, with its up-front cost added,
reaches the high-water mark. Every answer to a token request carries `X-Request-Cost` (omitted when refused)
and `X-Rate-Limit-Remaining` (high-water mark minus the bucket). Refusals are the legacy 403 with body
"403 Forbidden (Rate Limit Exceeded)\\n" or, since 2025, 429.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

BODIES = {
    "403": "403 Forbidden (Rate Limit Exceeded)\n",
    # UNCONFIRMED wording (docs/canvas-api.md §4): Canvas's 429 body was not seen.
    "429": "429 Too Many Requests (Rate Limit Exceeded)\n",
}


def default_cost(route: str, body_bytes: int, seconds: float) -> float:
    """A request's cost in Canvas's units (CPU + database seconds): the time it took, plus a little per MB
    uploaded and a fixed share for a create."""
    cost = seconds + body_bytes / 20_000_000
    if route == "create":
        cost += 0.5
    return round(cost, 6)


@dataclass
class _Bucket:
    level: float = 0.0
    updated: float = field(default_factory=time.monotonic)


class Throttle:
    """Leaky buckets keyed by client (the token's hash in Canvas; here the token itself).

    `mode`: None (never refuse, headers only), "403" or "429". Numbers are Canvas's defaults: high-water mark
    600, maximum 800, outflow 10 units/s, up-front cost 50. `cost(route, body_bytes, seconds)` prices a
    request.
    """

    def __init__(
        self,
        mode: str | None = None,
        *,
        high_water_mark: float = 600.0,
        maximum: float = 800.0,
        outflow: float = 10.0,
        up_front: float = 50.0,
        cost: Callable[[str, int, float], float] = default_cost,
    ) -> None:
        if mode not in (None, "403", "429"):
            raise ValueError(f"throttle must be None, '403' or '429', not {mode!r}")
        self.mode = mode
        self.high_water_mark = high_water_mark
        self.maximum = maximum
        self.outflow = outflow
        self.up_front = up_front
        self.cost = cost
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def _leak(self, key: str) -> _Bucket:
        bucket = self._buckets.setdefault(key, _Bucket())
        now = time.monotonic()
        bucket.level = max(0.0, bucket.level - (now - bucket.updated) * self.outflow)
        bucket.updated = now
        return bucket

    def begin(self, key: str) -> bool:
        """Start a request: add the up-front cost; False (and the cost taken back) if it must be refused."""
        with self._lock:
            bucket = self._leak(key)
            bucket.level += self.up_front
            if self.mode is not None and bucket.level >= self.high_water_mark:
                bucket.level -= self.up_front
                return False
            return True

    def end(self, key: str, cost: float) -> float:
        """End an admitted request: refund the up-front cost, add `cost`; returns X-Rate-Limit-Remaining."""
        with self._lock:
            bucket = self._leak(key)
            bucket.level = min(self.maximum, max(0.0, bucket.level - self.up_front + cost))
            return self.high_water_mark - bucket.level

    def remaining(self, key: str) -> float:
        """X-Rate-Limit-Remaining for a refused request (its up-front cost already refunded)."""
        with self._lock:
            return self.high_water_mark - self._leak(key).level

    def fill(self, key: str, level: float) -> None:
        """Set a client's bucket level (tests: start near the high-water mark)."""
        with self._lock:
            self._leak(key).level = level
