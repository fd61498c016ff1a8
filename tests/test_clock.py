"""The daemon's clock: monotonic durations, wall time only for what is shown."""

from __future__ import annotations

from sisdaemon.clock import DaemonClock


class Source:
    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


def test_a_wall_clock_step_back_or_forward_changes_no_duration_the_daemon_measures() -> None:
    wall, monotonic = Source(1_800_000_000.0), Source(50.0)
    clock = DaemonClock(wall, monotonic)
    start = clock()
    assert start == 1_800_000_000.0
    monotonic.value += 10
    wall.value += 10 - 3600  # ten seconds pass, and the wall clock is stepped back an hour
    assert clock() - start == 10
    monotonic.value += 5
    wall.value += 5 + 7200  # five more, and a step forward of two hours
    assert clock() - start == 15


def test_a_reading_is_shown_as_the_wall_clock_shows_that_moment_now() -> None:
    wall, monotonic = Source(1_800_000_000.0), Source(0.0)
    clock = DaemonClock(wall, monotonic)
    moment = clock()
    monotonic.value += 20
    wall.value += 20 - 3600
    assert clock.to_wall(moment) == 1_800_000_000.0 - 3600
    assert clock.to_wall(None) is None
