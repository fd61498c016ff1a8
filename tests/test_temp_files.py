"""Temp files that interrupted atomic writes leave beside the state file are removed at start, and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sisdaemon.state import history_path, owned_by_state, remove_stale_temp_files


def killed_during_write(target: Path) -> None:
    """Run ``write_atomic(target, ...)`` in a real process that is SIGKILLed after the temp file is written and
    fsynced, just before its rename: what a kill at that instant leaves behind."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from sisdaemon import state
        os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
        state.write_json_atomic(Path({str(target)!r}), {{"version": 1}})
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr


def test_temp_files_left_by_writes_killed_before_their_rename_are_removed(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    history_file = history_path(state_file, "nightly")
    for target in (state_file, state_file, history_file):
        killed_during_write(target)
    leftovers = sorted(path for path in tmp_path.iterdir() if path.name.endswith(".tmp"))
    assert len(leftovers) == 3

    removed = remove_stale_temp_files(tmp_path, owned=owned_by_state(state_file))

    assert sorted(removed) == leftovers
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_only_names_of_the_atomic_write_pattern_for_this_state_file_are_removed(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    kept = [
        "state.json",
        "state.json.lock",
        "state.history.nightly.json",
        ".state.json.tmp",  # no random part
        ".state.json.ABCDEF12.tmp",  # not lower-case hex
        ".state.json.abc123.tmp",  # not 8 digits
        "state.json.0123abcd.tmp",  # no leading dot
        ".state.json.0123abcd.tmp.keep",
        ".other.json.0123abcd.tmp",  # another instance's state file in the same folder
        ".other.history.nightly.json.0123abcd.tmp",
        ".state.history.nightly.json.0123abcd.part",
        ".notes.txt.0123abcd.tmp",
    ]
    for name in kept:
        (tmp_path / name).write_text("x")
    (tmp_path / ".state.json.feedbeef.tmp").mkdir()  # not a regular file: never removed
    removable = [
        ".state.json.0123abcd.tmp",
        ".state.history.nightly.json.89abcdef.tmp",
        ".state.history.x.y.json.00000000.tmp",
    ]
    for name in removable:
        (tmp_path / name).write_text("{")

    removed = remove_stale_temp_files(tmp_path, owned=owned_by_state(state_file))

    assert sorted(path.name for path in removed) == sorted(removable)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([*kept, ".state.json.feedbeef.tmp"])


def test_without_the_lock_only_temp_files_older_than_the_given_age_are_removed(tmp_path: Path) -> None:
    fresh = tmp_path / ".state.json.0123abcd.tmp"
    old = tmp_path / ".state.json.89abcdef.tmp"
    fresh.write_text("{")
    old.write_text("{")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))

    removed = remove_stale_temp_files(tmp_path, min_age_seconds=600)

    assert removed == [old]
    assert fresh.exists() and not old.exists()


def test_a_missing_folder_has_nothing_to_remove(tmp_path: Path) -> None:
    assert remove_stale_temp_files(tmp_path / "absent") == []
