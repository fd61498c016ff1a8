"""A collecting feed with a backlog (docs/design.md promise 6): the set intake decides on the first few ready files
only, so a decision costs the same with 1,000 or 10,000 files waiting, and a backlog goes out set after set."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from sisdaemon import sets
from sisdaemon.config.schema import FeedSettings
from sisdaemon.jobs import Fingerprint
from sisdaemon.logs import Conditions
from sisdaemon.set_intake import SetIntake
from sisdaemon.settle import Observation, ReadyFile, SettleTracker
from sisdaemon.watcher import DropWatcher


class CountingTracker:
    """A real tracker that counts the ready files and names the set intake reads from it."""

    def __init__(self, tracker: SettleTracker) -> None:
        self.tracker = tracker
        self.read = 0

    def ready(self) -> list[ReadyFile]:
        found = self.tracker.ready()
        self.read += len(found)
        return found

    def first_ready_several(self, limit: int) -> list[ReadyFile]:
        found = self.tracker.first_ready_several(limit)
        self.read += len(found)
        return found

    def names(self) -> Iterable[str]:
        names = list(self.tracker.names())
        self.read += len(names)
        return names

    def settling(self) -> bool:
        return self.tracker.settling()

    def tracked(self, name: str) -> bool:
        return self.tracker.tracked(name)

    def __len__(self) -> int:
        return len(self.tracker)


def ready_tracker(count: int, suffix: str) -> SettleTracker:
    """``count`` regular files ``f000000.<suffix>``..., ready (oldest mtime first in name order)."""
    tracker = SettleTracker(0.0, 0.0)
    for index in range(count):
        name = f"f{index:06d}.{suffix}"
        seen = Observation(name, Fingerprint(index + 1, 10, index * 1000), True, "file")
        tracker.observe(name, seen, 0.0)
        tracker.observe(name, seen, 1.0)  # a second look at its end of wait: ready
    return tracker


def collecting_feed() -> FeedSettings:
    return FeedSettings.model_validate(
        {
            "name": "nightly",
            "drop_dir": "/srv/drop",
            "done_dir": "/srv/done",
            "failed_dir": "/srv/failed",
            "collect_seconds": 5,
            "collect_max_seconds": 60,
        }
    )


def decide_five_times(count: int, suffix: str) -> tuple[int, list[str]]:
    """Five decisions on ``count`` ready files, the feed full after the first three claims: (files and names read,
    the files taken alone)."""
    tracker = CountingTracker(ready_tracker(count, suffix))
    taken: list[str] = []
    room = iter([True, True, True] if suffix == "zip" else [])  # a set's claim needs real folders: no room for one
    intake = SetIntake(
        None,  # type: ignore[arg-type]  # never reached: no set is claimed here
        Conditions(),
        lambda fd: False,
        take_alone=lambda feed, item, now: taken.append(item.name),
        on_claimed=lambda job, now: None,
    )
    watcher: DropWatcher = None  # type: ignore[assignment]  # only a set's claim uses it
    for turn in range(5):
        intake.take(collecting_feed(), tracker, watcher, 100.0 + turn, lambda: next(room, False))  # type: ignore[arg-type]
    return tracker.read, taken


@pytest.mark.parametrize("suffix", ["zip", "csv"])
def test_a_collecting_decision_reads_as_many_files_with_10000_waiting_as_with_1000(suffix: str) -> None:
    reads = {}
    for count in (1_000, 10_000):
        reads[count], taken = decide_five_times(count, suffix)
        if suffix == "zip":  # taken alone, oldest first, while the feed has room
            assert taken == ["f000000.zip", "f000001.zip", "f000002.zip"]
        else:
            assert taken == []  # a full set waits for room as one (tests/daemon/test_sets.py claims sets)
    assert reads[10_000] == reads[1_000] <= 5 * sets.LOOKAHEAD, reads


def test_a_set_with_the_most_files_a_set_holds_is_taken_at_once_even_while_others_settle() -> None:
    ready = [sets.Candidate(f"f{index:03}.csv", 100) for index in range(sets.MAX_SET_FILES)]
    decided = sets.collect(ready, settling=True, now=101, collect_seconds=5, collect_max_seconds=60)
    assert len(decided.take) == sets.MAX_SET_FILES
    fewer = sets.collect(ready[:-1], settling=True, now=101, collect_seconds=5, collect_max_seconds=60)
    assert fewer.take == () and fewer.wake_at == 160


def test_the_tracker_hands_out_its_first_ready_files_in_order_without_taking_them() -> None:
    tracker = ready_tracker(50, "csv")
    tracker.observe("settling.csv", Observation("settling.csv", Fingerprint(99, 1, 1), True, "file"), 5.0)
    tracker.forget("f000001.csv")
    first = [item.name for item in tracker.first_ready_several(3)]
    assert first == ["f000000.csv", "f000002.csv", "f000003.csv"]
    assert [item.name for item in tracker.first_ready_several(3)] == first  # nothing was taken
    assert tracker.settling()
    tracker.forget("settling.csv")
    assert not tracker.settling()
    changed = Observation("f000000.csv", Fingerprint(1, 11, 0), True, "file")
    tracker.observe("f000000.csv", changed, 6.0)  # it changed: settling again, no longer ready
    assert tracker.settling() and tracker.first_ready_several(1)[0].name == "f000002.csv"
