"""``sisdaemon check``, the monitoring probe, against real daemon processes and real folders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DEADLINE, DaemonProcess, Spool, wait_for

USERS = b"user_id,login_id,first_name,last_name,email,status\nu1,user1,Ada,One,a@example.edu,active\n"
BAD_HEADERS = b"course_id,randomness,smelly\ntest_1,TC 101,Test Course 101\n"


def check(spool: Spool, *args: str) -> tuple[int, str]:
    """Run the probe without the token in its environment (it needs none)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SISDAEMON_TEST")}
    result = subprocess.run(
        [sys.executable, "-m", "sisdaemon", "check", "-c", str(spool.config), *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=environment,
    )
    assert result.stdout.count("\n") == 1, result.stdout + result.stderr
    return result.returncode, result.stdout.strip()


def state_folder_listing(spool: Spool) -> dict[str, tuple[int, int]]:
    folder = spool.state_file.parent
    return {path.name: (path.stat().st_mtime_ns, path.stat().st_size) for path in sorted(folder.iterdir())}


def test_with_no_daemon_running_the_probe_says_critical(spool: Spool) -> None:
    code, line = check(spool)
    assert code == 2
    assert line.startswith("SISDAEMON CRITICAL - daemon not running")
    assert "| in_flight=0 " in line and "heartbeat_age=U" in line


def test_a_running_daemon_that_filed_its_file_is_ok_and_the_probe_writes_nothing(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    process = daemon_process()
    spool.drop_file("users.csv", USERS)
    wait_for(lambda: spool.all_filed(1), what="the file filed")
    wait_for(lambda: check(spool)[0] == 0, what="the probe to say OK")
    before = state_folder_listing(spool)

    code, line = check(spool, "--failed-since", "1h")

    assert code == 0 and line.startswith("SISDAEMON OK - 1 feed(s) fresh, daemon running, 0 in flight |")
    assert "failed=0" in line
    after = state_folder_listing(spool)
    assert {name: value for name, value in after.items() if "heartbeat" not in name} == {
        name: value for name, value in before.items() if "heartbeat" not in name
    }
    assert process.terminate() == 0


def test_files_in_failed_since_a_time_warn_and_older_ones_do_not(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    process = daemon_process()
    spool.drop_file("bad.csv", BAD_HEADERS)
    wait_for(lambda: spool.all_filed(1), what="the file filed")

    code, line = check(spool, "--failed-since", "1h")
    assert code == 1 and "1 file(s) in failed/ since" in line and "failed=1" in line
    tomorrow = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(time.time() + 86400))
    assert check(spool, "--failed-since", tomorrow)[0] == 0
    # A file moved out of failed/ (sent again, or looked after) no longer waits there.
    [filed] = spool.filed("failed")
    filed.rename(spool.root / filed.name)
    assert check(spool, "--failed-since", "1h")[0] == 0
    assert process.terminate() == 0


def test_a_stale_feed_and_an_import_stuck_in_canvas_s_queue_warn(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed["expect_file_every"] = "2s"
    process = daemon_process()
    wait_for(lambda: "no file since the daemon started" in check(spool)[1], what="the feed to go stale")
    code, line = check(spool)
    assert code == 1 and "stale=1" in line

    sandbox.stick_next("created")
    spool.drop_file("users.csv", USERS)
    wait_for(lambda: "in_flight=1" in check(spool)[1], what="the file in flight")
    code, line = wait_for(lambda: (r := check(spool, "--stuck-warning", "1s"))[1].count("stuck") and r, what="stuck")
    assert code == 1 and "import stuck for" in line and "(feeds nightly)" in line
    assert check(spool, "--stuck-warning", "1s", "--stuck-critical", "1s")[0] == 2
    assert process.terminate() == 0


def test_a_daemon_whose_loop_stands_still_is_critical(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    process = daemon_process()
    wait_for(lambda: check(spool)[0] == 0, what="the probe to say OK")
    process.process.send_signal(signal.SIGSTOP)  # the lock stays held; the loop stops turning
    try:
        _, line = wait_for(lambda: (r := check(spool, "--heartbeat", "2s"))[0] == 2 and r, what="critical")
        assert "daemon loop stuck: no turn for" in line
    finally:
        process.process.send_signal(signal.SIGCONT)
    assert process.terminate() == 0


def test_a_refused_token_is_critical(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    daemon_process(env={"SISDAEMON_TEST_TOKEN": "a-token-canvas-refuses-0001"})
    code, line = wait_for(lambda: (r := check(spool))[1].count("credential") and r, what="the credential fault")
    assert code == 2 and "credential fault" in line and "a-token-canvas-refuses" not in line


def test_a_state_the_probe_cannot_read_or_a_bad_option_is_unknown(spool: Spool, tmp_path: Path) -> None:
    spool.state_file.write_text("{not json")
    code, line = check(spool)
    assert code == 2 and "state damaged" in line
    code, line = check(spool, "--failed-since", "last tuesday")
    assert code == 3 and line.startswith("SISDAEMON UNKNOWN - --failed-since:")
    missing = tmp_path / "nowhere.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "sisdaemon", "check", "-c", str(missing)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3 and result.stdout.startswith("SISDAEMON UNKNOWN - configuration:")
