"""Feed freshness (pure): is a feed past its ``expect_file_every`` or ``expect_success_every`` window?

The most common failure of an SIS integration is the nightly export that silently stops arriving. Each feed may say
how often a file is expected (``expect_file_every``: a file filed, done or failed, or one claimed and in flight) and
how often one is expected to go in (``expect_success_every``: a file filed in done/). A feed is stale when its window
has passed since the last such file; a feed with none yet is judged from when the daemon started, so a fresh install
is not stale before one window has passed. No I/O, no clock: times are passed in (seconds since the epoch).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sisdaemon.config import FeedSettings
from sisdaemon.config.durations import format_duration

#: The two expectations, as the metrics' ``expectation`` label and the journal name them.
FILE = "file"
SUCCESS = "success"


@dataclass(frozen=True)
class Verdict:
    """One expectation of one feed, judged at ``now``.

    ``since``: what the window runs from (the last file or success, else the daemon's start); ``last_at``: the last
    file or success (None: none known); ``every``: the window (seconds); ``stale``: ``now`` is past
    ``since + every``.
    """

    feed: str
    expectation: str
    stale: bool
    since: float
    every: float
    last_at: float | None
    now: float

    @property
    def due_at(self) -> float:
        """When the window ends (seconds since the epoch)."""
        return self.since + self.every

    def sentence(self) -> str:
        """For people: ``feed nightly: no file for 1d 3h (expected every 1d 2h)``."""
        what = "file" if self.expectation == FILE else "successful import"
        if self.last_at is None:
            idle = f"no {what} since the daemon started {format_duration(self.now - self.since)} ago"
        else:
            idle = f"no {what} for {format_duration(self.now - self.since)}"
        if not self.stale:
            return f"feed {self.feed}: last {what} {format_duration(self.now - self.since)} ago, next due within " + (
                f"{format_duration(self.due_at - self.now)}"
            )
        return f"feed {self.feed}: {idle} (expected every {format_duration(self.every)})"


def newest(*times: float | None) -> float | None:
    """The latest of ``times`` that are known; None when none is."""
    known = [time for time in times if time is not None]
    return max(known) if known else None


def judge(
    feed: str,
    *,
    now: float,
    started_at: float | None,
    last_file_at: float | None,
    last_success_at: float | None,
    expect_file_every: float | None,
    expect_success_every: float | None,
) -> list[Verdict]:
    """The verdicts of ``feed``'s expectations that are set (none when neither is).

    ``started_at``: when the daemon started (None when not known, e.g. to ``check`` with no daemon ever run: an
    expectation with no last time is then not judged). ``last_file_at``: the newest file filed or claimed;
    ``last_success_at``: the newest filed in done/.
    """
    verdicts = []
    for expectation, every, last_at in (
        (FILE, expect_file_every, last_file_at),
        (SUCCESS, expect_success_every, last_success_at),
    ):
        if every is None:
            continue
        since = last_at if last_at is not None else started_at
        if since is None:
            continue
        verdicts.append(Verdict(feed, expectation, now > since + every, since, every, last_at, now))
    return verdicts


def judge_feed(
    feed: FeedSettings,
    *,
    now: float,
    started_at: float | None,
    last_file_at: float | None,
    last_success_at: float | None,
    claimed_at: Iterable[float] = (),
) -> list[Verdict]:
    """:func:`judge` with ``feed``'s windows; a file claimed and in flight (``claimed_at``: the feed's jobs' claim
    times) counts as a file that came."""
    return judge(
        feed.name,
        now=now,
        started_at=started_at,
        last_file_at=newest(last_file_at, *claimed_at),
        last_success_at=last_success_at,
        expect_file_every=feed.expect_file_every,
        expect_success_every=feed.expect_success_every,
    )
