"""The daemon's clock: wall time read once at start, moved on by the monotonic clock.

Every duration the daemon measures itself (settling, retry backoff, poll timing, the resend wait, the errors-CSV wait)
is a difference of two readings of this clock, so a step of the wall clock (NTP, a sysadmin's ``date -s``) neither
stalls the daemon (a step back) nor shortens a settle (a step forward). Its readings still look like seconds since
the epoch, so they can be stored in the state file; what is shown to people (sidecar times) is moved back onto the
wall clock with :meth:`DaemonClock.to_wall`. Canvas's own times are compared with Canvas's clock (its ``Date``
header), never with this one.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class DaemonClock:
    """Callable: seconds since the epoch as the wall clock said at start, plus the monotonic seconds since.

    ``wall`` and ``monotonic`` are the two sources (tests inject a wall clock that steps).
    """

    def __init__(self, wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.wall = wall
        self.monotonic = monotonic
        self._anchor = wall() - monotonic()

    def __call__(self) -> float:
        """The daemon's time now (seconds; never goes back)."""
        return self._anchor + self.monotonic()

    def to_wall(self, moment: float | None) -> float | None:
        """A reading of this clock as the wall clock shows that moment now (None stays None)."""
        if moment is None:
            return None
        return moment + (self.wall() - self())
