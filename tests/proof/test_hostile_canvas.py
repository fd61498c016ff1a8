"""Hostile Canvas (issue 7, "The proof"): real `sisdaemon run` processes against a Canvas, or a proxy in front of it,
that trickles its answers, resets after the body, answers HTML with 200, redirects to a login page and echoes the
request's Authorization header back in its error pages. Files still end in the right folder; no token (the first, or
one read after a rotation) is written anywhere; the loop never freezes; a stop takes effect at once whatever Canvas is
doing, also when nobody reads the notify socket."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sisdaemon.canvas import redact, remember_secret
from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import OTHER_TOKEN, TOKEN, DaemonProcess, Spool, creates, wait_for

USERS_A = b"user_id,login_id,first_name,last_name,email,status\na1,a1,Ada,One,a1@example.edu,active\n"
#: One good row and one without a login_id: imported_with_messages (done/), with an errors CSV.
USERS_B = (
    b"user_id,login_id,first_name,last_name,email,status\n"
    b"b1,b1,Bea,Two,b1@example.edu,active\nb2,,Bo,Two,b2@example.edu,active\n"
)
USERS_C = b"user_id,login_id,first_name,last_name,email,status\nc1,c1,Cy,Three,c1@example.edu,active\n"
USERS_D = b"user_id,login_id,first_name,last_name,email,status\nd1,d1,Di,Four,d1@example.edu,active\n"
LOGIN_PAGE = "https://sso.example.edu/login?service=canvas"
#: The longest piece of a token that may appear anywhere: any 10 characters in a row of a token are a leak (a message
#: cut short must not keep a token's start).
PIECE = 10


def token_pieces(*tokens: str) -> set[str]:
    return {token[start : start + PIECE] for token in tokens for start in range(len(token) - PIECE + 1)}


def leaks(text: str, *tokens: str) -> list[str]:
    return sorted(piece for piece in token_pieces(*tokens) if piece in text)


def run_status(spool: Spool, *args: str) -> str:
    """`sisdaemon status` (text or --json): its stdout and stderr together."""
    result = subprocess.run(
        [sys.executable, "-m", "sisdaemon", "status", "-c", str(spool.config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def events_named(daemon: DaemonProcess, name: str) -> list[dict[str, Any]]:
    return [event for event in daemon.events() if event.get("event") == name]


def every_file_under(root: Path) -> Iterator[Path]:
    for folder, _, names in os.walk(root):
        for name in names:
            yield Path(folder, name)


class StateVersions:
    """Every distinct version of the files in the state folder (state, history), read every 20 ms by a thread while
    the daemon runs: a token stored for a moment (a fault's message, a job's last error) is caught too."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="state-versions")
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            for path in self.folder.iterdir():
                with contextlib.suppress(OSError):
                    self.seen.add(path.read_bytes().decode("utf-8", "replace"))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def test_a_hostile_canvas_never_gets_a_token_written_anywhere_and_every_file_ends_in_the_right_folder(
    spool: Spool,
    sandbox: Sandbox,
    daemon_process: Callable[..., DaemonProcess],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> None:
    # The token lives outside the spool, which is then searched whole: logs, state, history, sidecars, errors CSVs.
    token_file = tmp_path_factory.mktemp("credentials") / "canvas-token"
    token_file.write_text(TOKEN + "\n")
    spool.canvas.update({"token_env": None, "token_file": str(token_file), "timeout_seconds": 2})
    spool.polling["errors_csv_wait_seconds"] = 20
    status_seen: list[str] = []

    def look_at_status() -> None:
        status_seen.append(run_status(spool))
        status_seen.append(run_status(spool, "--json"))

    # Phase 1, the first token: each kind of hostile answer once, on the way of a.csv.
    echoed = [
        sandbox.faults.add(route="account", status=503, echo_authorization=True),
        sandbox.faults.add(route="users_self", status=500, echo_authorization=True),
        sandbox.faults.add(route="index", status=502, html=True, echo_authorization=True),
    ]
    reset_after_body = sandbox.faults.add(route="create", reset="after")
    trickled = sandbox.faults.add(route="show", trickle=0.5)  # the real SisImport, a byte every 0.5 s: minutes
    echoed += [
        sandbox.faults.add(route="show", html=True, echo_authorization=True),  # HTML with 200
        sandbox.faults.add(route="show", status=302, headers={"Location": LOGIN_PAGE}, echo_authorization=True),
        sandbox.faults.add(route="show", status=401, echo_authorization=True),  # the same token is read again
    ]
    daemon = daemon_process()
    versions = StateVersions(spool.state_file.parent)
    request.addfinalizer(versions.close)
    spool.drop_file("a.csv", USERS_A)
    wait_for(lambda: len(spool.filed("done")) == 1, what="a.csv in done/ through phase 1's faults")
    assert reset_after_body.used == 1 and trickled.used == 1 and all(fault.used == 1 for fault in echoed)
    trickle_ended = [
        event for event in events_named(daemon, "canvas_unavailable") if "no whole answer within 2 s" in event["error"]
    ]
    assert trickle_ended, "the trickled answer ended by its whole-call deadline, a transient fault"
    look_at_status()

    # Phase 2: the token is rotated; a 401 that echoes the old token makes the daemon read the new one. Then
    # answers echo the new token, among them an HTML page with 200 to the POST (outcome unknown: found by its tag).
    token_file.write_text(OTHER_TOKEN + "\n")
    echoed_later = [
        sandbox.faults.add(route="any", status=401, echo_authorization=True),
        sandbox.faults.add(route="users_self", status=503, html=True, echo_authorization=True),
        sandbox.faults.add(route="create", when="after", html=True, echo_authorization=True),
        sandbox.faults.add(route="show", status=500, echo_authorization=True),
        sandbox.faults.add(route="show", status=307, headers={"Location": LOGIN_PAGE}, echo_authorization=True),
    ]
    spool.drop_file("b.csv", USERS_B)
    wait_for(lambda: len(spool.filed("done")) == 2, what="b.csv in done/ after the rotation")
    assert all(fault.used == 1 for fault in echoed_later)
    look_at_status()

    # Phase 3: the POST is redirected to a login page that echoes the token: a configuration fault that holds the
    # feed (its reason in the state and in `status`) until SIGHUP; then d.csv goes in.
    redirected = sandbox.faults.add(
        route="create", status=302, headers={"Location": LOGIN_PAGE}, echo_authorization=True
    )
    spool.drop_file("d.csv", USERS_D)
    wait_for(lambda: events_named(daemon, "feed_held"), what="the feed held after the redirected POST")
    assert redirected.used == 1
    look_at_status()
    assert '"held": true' in status_seen[-1] and "[redacted]" in status_seen[-1]
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: len(spool.filed("done")) == 3, what="d.csv in done/ once the feed is released")

    # Phase 4: Canvas refuses a file as too large, echoing the token in its answer: failed/ (a fault of the file),
    # with Canvas's answer in the sidecar's reason.
    too_large = sandbox.faults.add(route="create", status=413, echo_authorization=True)
    spool.drop_file("c.csv", USERS_C)
    wait_for(lambda: len(spool.filed("failed")) == 1, what="c.csv in failed/ as too large")
    assert too_large.used == 1
    look_at_status()
    assert daemon.terminate() == 0
    look_at_status()
    versions.close()

    # Both tokens were read and used: requests of user 1 (TOKEN) and of user 2 (OTHER_TOKEN) reached Canvas.
    users = {request.user_id for request in sandbox.requests}
    assert {1, 2} <= users, users
    # The right folders: a.csv, b.csv and d.csv imported once each (the reset, the HTML answer and the redirect of
    # their POSTs lost nothing and sent nothing twice); only the file Canvas refused as too large is in failed/.
    done = {sidecar["file"]["name"]: sidecar for sidecar in spool.sidecars("done")}
    assert sorted(done) == ["a.csv", "b.csv", "d.csv"]
    assert done["b.csv"]["outcome"] == "imported_with_messages" and done["b.csv"]["canvas"]["errors_csv"]
    assert [(s["file"]["name"], s["reason_code"]) for s in spool.sidecars("failed")] == [("c.csv", "too_large")]
    assert len(sandbox.imports()) == 3 and len([c for c in creates(sandbox) if c.import_id]) == 3
    assert not list(spool.drop.iterdir()) and not list(spool.work.iterdir())

    # The echoed tokens reached the daemon and were redacted: "[redacted]" stands where they were.
    log_text = daemon.output()
    assert "[redacted]" in log_text
    assert "[redacted]" in spool.sidecars("failed")[0]["reason"]
    # Not a piece of either token anywhere: every log line (debug level), the state and history files, every
    # sidecar and errors CSV (the whole spool is searched), and `status` in both forms, during the run and after.
    assert yaml.safe_load(spool.config.read_text())["log"]["level"] == "debug"
    searched = list(every_file_under(spool.root))
    assert any(path.name.endswith(".errors.csv") for path in searched)
    assert any(".history." in path.name for path in searched) and spool.state_file in searched
    found = {str(path): leaks(path.read_bytes().decode("utf-8", "replace"), TOKEN, OTHER_TOKEN) for path in searched}
    assert {path: pieces for path, pieces in found.items() if pieces} == {}
    assert [leaks(text, TOKEN, OTHER_TOKEN) for text in status_seen] == [[]] * len(status_seen)
    # Every version the state and history files went through, faults and holds included.
    assert any("[redacted]" in text for text in versions.seen), "no echoed token reached the state: a vacuous check"
    assert [leaks(text, TOKEN, OTHER_TOKEN) for text in versions.seen] == [[]] * len(versions.seen)


def test_an_errors_csv_download_answered_by_a_page_that_echoes_the_token_writes_no_token(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    # The errors CSV is fetched from Canvas's own host with the token (docs/design.md "Talking to Canvas"); a proxy
    # or login page there that answers 200 with an HTML page echoing the request must not put the token on disk.
    spool.polling["errors_csv_wait_seconds"] = 20
    page = sandbox.faults.add(route="file_download", html=True, echo_authorization=True)
    daemon = daemon_process()
    spool.drop_file("b.csv", USERS_B)
    wait_for(lambda: len(spool.filed("done")) == 1, what="b.csv in done/")
    assert daemon.terminate() == 0
    assert page.used == 1
    found = {
        str(path): leaks(path.read_bytes().decode("utf-8", "replace"), TOKEN) for path in every_file_under(spool.root)
    }
    assert {path: pieces for path, pieces in found.items() if pieces} == {}


def test_redaction_gives_one_clean_marker_however_often_a_text_is_redacted() -> None:
    remember_secret(TOKEN)
    once = redact(f"Authorization: Bearer {TOKEN}; token={TOKEN}")
    assert once == "Authorization: Bearer [redacted]; token=[redacted]"
    assert redact(once) == once


class NotifyListener:
    """An AF_UNIX datagram socket standing in for systemd's notify socket (sd_notify(3)): every datagram the daemon
    sends, with the monotonic time it arrived, read by a thread until :meth:`close`."""

    def __init__(self, path: Path) -> None:
        assert len(str(path)) < 100, f"{path}: too long for an AF_UNIX address"
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.received: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-listener")
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.received.append((time.monotonic(), data.decode("utf-8", "replace")))

    def times_of(self, line: str) -> list[float]:
        """When each datagram holding ``line`` (e.g. "WATCHDOG=1") arrived."""
        return [at for at, message in list(self.received) if line in message.splitlines()]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        yield listener
    finally:
        listener.close()


def work_names(spool: Spool) -> list[str]:
    return sorted(path.name for path in spool.work.iterdir())


def test_the_loop_scans_claims_and_pings_the_watchdog_while_a_call_to_canvas_trickles(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess], notify: NotifyListener
) -> None:
    # Defect 1: a Canvas that sends one byte every 0.5 s held the main loop for ever. Here the poll of a.csv's import
    # trickles (the whole answer would take minutes); its whole-call deadline is 10 s.
    spool.canvas["timeout_seconds"] = 10
    spool.polling["max_interval_seconds"] = 30  # a verified token stays good for claims for 30 s (default: 60)
    trickled = sandbox.faults.add(route="show", trickle=0.5)
    daemon = daemon_process(env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "10000000"})
    spool.drop_file("a.csv", USERS_A)
    wait_for(lambda: trickled.used == 1, what="the first poll of a.csv's import, answered a byte at a time")
    slow_call_began = time.monotonic()
    spool.drop_file("b.csv", USERS_C)
    # b.csv is taken (out of drop/, into work/) while the poll still trickles: scans and claims go on.
    wait_for(
        lambda: not (spool.drop / "b.csv").exists() and any(name.endswith("_b.csv") for name in work_names(spool)),
        timeout=20,
        what="b.csv claimed into work/",
    )
    deadline_events = [
        event for event in events_named(daemon, "canvas_unavailable") if "no whole answer within 10 s" in event["error"]
    ]
    assert deadline_events == [], "b.csv was claimed only after the slow call ended"
    # The stuck call ends by its deadline, as a transient fault (nothing goes to failed/ for it).
    wait_for(
        lambda: any(
            "no whole answer within 10 s" in event["error"] for event in events_named(daemon, "canvas_unavailable")
        ),
        timeout=40,
        what="the trickled poll ended by its deadline",
    )
    slow_call_ended = time.monotonic()
    # WATCHDOG=1 kept coming while the call was stuck: no silence of 6 s or more in that time.
    pings = [at for at in notify.times_of("WATCHDOG=1") if slow_call_began <= at <= slow_call_ended]
    edges = [slow_call_began, *pings, slow_call_ended]
    assert len(pings) >= 2 and max(b - a for a, b in itertools.pairwise(edges)) < 6.0, pings
    wait_for(lambda: len(spool.filed("done")) == 2, what="both files imported")
    assert spool.filed("failed") == [] and len(sandbox.imports()) == 2
    assert daemon.terminate() == 0


def padded_zip(path: Path, padding_mb: int) -> Path:
    """A zip of one users CSV and, as a Mac's Finder adds, a large `__MACOSX/` entry (random bytes, stored) that
    Canvas skips: a big upload whose import is quick."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("users.csv", USERS_A)
        archive.writestr("__MACOSX/._users.csv", os.urandom(padding_mb * 1024 * 1024))
    return path


def stop_within(daemon: DaemonProcess, seconds: float) -> tuple[int | None, float]:
    """SIGTERM, then the exit code if the process ended within ``seconds`` (None if not) and how long it took."""
    sent = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    try:
        code: int | None = daemon.process.wait(seconds)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - sent


@pytest.mark.parametrize(
    "slow",
    [
        pytest.param({"route": "show", "trickle": 0.5}, id="poll-trickles"),
        pytest.param({"route": "create", "delay": 45.0, "when": "before"}, id="upload-not-read"),
        pytest.param({"route": "create", "delay": 45.0, "when": "after"}, id="upload-answer-delayed"),
    ],
)
def test_sigterm_during_a_call_that_would_last_a_minute_stops_at_once_and_a_restart_imports_the_file_once(
    spool: Spool,
    sandbox: Sandbox,
    daemon_process: Callable[..., DaemonProcess],
    notify: NotifyListener,
    slow: dict[str, Any],
) -> None:
    # Defect 9: a stop waited for the call in progress (up to timeout_seconds). Here only cancellation can end the
    # call: deadlines of 60 s, and Canvas (or its proxy) slow for longer. The upload cases send a 24 MB zip: not
    # read at all while the sandbox waits (the daemon blocks mid-send), or read whole and the answer held back.
    spool.canvas.update({"timeout_seconds": 60, "upload_timeout_seconds": 60})
    fault = sandbox.faults.add(**slow)
    if slow["route"] == "create":
        padded_zip(spool.root / "big.zip.tmp", 24)
        os.rename(spool.root / "big.zip.tmp", spool.drop / "big.zip")
    else:
        spool.drop_file("big.zip", USERS_A)  # a CSV under any name: what matters is the slow poll
    daemon = daemon_process(env={"NOTIFY_SOCKET": str(notify.path)})
    wait_for(lambda: fault.used == 1, what="the daemon inside the slow call")
    wait_for(lambda: "upload_started" in daemon.output(), what="the upload under way")
    if slow.get("when") == "after":
        wait_for(lambda: len(sandbox.imports()) == 1, what="Canvas holding the whole upload, its answer held back")
    code, took = stop_within(daemon, 3.0)
    assert code == 0 and took < 3.0, (code, took, daemon.output()[-3000:])
    assert notify.times_of("STOPPING=1"), notify.received
    daemon.wait()

    # A restart finishes the file with exactly one import: a POST cut off is of unknown outcome and is found again
    # by its tag (or, if Canvas never had it, sent again); never two imports.
    restarted = daemon_process()
    wait_for(lambda: len(spool.filed("done")) == 1, what="the file imported after the restart")
    assert restarted.terminate() == 0
    assert spool.filed("failed") == []
    assert len(sandbox.imports()) == 1, sandbox.imports()
    [sidecar] = spool.sidecars("done")
    assert sidecar["canvas"]["import_id"] == sandbox.imports()[0]["id"]
    if slow.get("when") == "after":  # Canvas had the upload: found by its tag, never sent again
        assert len(creates(sandbox)) == 1


@pytest.fixture
def full_notify_socket(tmp_path: Path) -> Iterator[Path]:
    """A notify socket whose owner stopped reading: its queue filled with non-blocking sends until EAGAIN."""
    path = tmp_path / "full-notify.sock"
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK) as sender,
    ):
        receiver.bind(str(path))
        sent = 0
        with pytest.raises(BlockingIOError) as full:
            while sent < 1_000_000:
                sender.sendto(b"STATUS=filler", str(path))
                sent += 1
        assert full.value.errno in (errno.EAGAIN, errno.EWOULDBLOCK) and sent > 0
        yield path


def test_a_notify_socket_nobody_reads_never_holds_up_the_daemon_or_its_stop(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess], full_notify_socket: Path
) -> None:
    # Defect 12: with the notify socket's queue full, sd_notify blocked: STOPPING=1 was lost and a stop took 15 s.
    daemon = daemon_process(env={"NOTIFY_SOCKET": str(full_notify_socket), "WATCHDOG_USEC": "10000000"})
    spool.drop_file("a.csv", USERS_A)
    wait_for(lambda: len(spool.filed("done")) == 1, what="a.csv imported while every notification is refused")
    code, took = stop_within(daemon, 3.0)
    assert code == 0 and took < 3.0, (code, took, daemon.output()[-3000:])
    daemon.wait()
