"""Real uploaders into the drop folder: OpenSSH's sftp through a real sshd (internal-sftp), and rsync.

What the experiments behind these tests showed (OpenSSH 9.2, rsync 3.2): ``sftp -l KBIT`` does not trickle, it
sends a burst of 255 KiB at once and then stalls until the average rate is back under the limit (at 400 kbit/s a
300 KB file lands 261,120 bytes at once, then nothing for about 5 s, then the rest). sshd's sftp-server holds the
file open for writing through the stall, and closes it as soon as the client goes away (killed or not): a file
killed half way through an upload straight into its final name is, from then on, a closed file that settles like any
other; only a temp name (or the writer check while the client lives) tells the daemon it is partial.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DaemonProcess, DaemonThread, Spool, creates, wait_for
from tests.proof.uploaders import Sshd, need, quote

HEADER = b"user_id,login_id,first_name,last_name,email,status\n"
#: sftp's first burst (bytes): a file larger than this stalls part way at a low ``-l``.
BURST = 261_120


def users_csv(size: int, seed: str = "a") -> bytes:
    """A valid users.csv of about ``size`` bytes (whole rows)."""
    rows = []
    total = len(HEADER)
    number = 0
    while total < size:
        row = b"%s%d,login%s%d,First,Last,u%s%d@example.edu,active\n" % (
            seed.encode(),
            number,
            seed.encode(),
            number,
            seed.encode(),
            number,
        )
        rows.append(row)
        total += len(row)
        number += 1
    return HEADER + b"".join(rows)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_uploads(sandbox: Sandbox) -> list[bytes]:
    """The bytes of every upload the sandbox received and kept, in import order."""
    with sandbox.store.lock:
        return [item.upload.path.read_bytes() for item in sandbox.store.ordered_imports() if item.upload is not None]


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def wait_until_size_is_steady(path: Path, at_least: int, steady: float = 0.5) -> int:
    """Wait until ``path`` has at least ``at_least`` bytes and its size has not changed for ``steady`` seconds."""
    seen = {"size": -2, "since": time.monotonic()}

    def steady_now() -> bool:
        size = size_of(path)
        if size != seen["size"]:
            seen["size"], seen["since"] = size, time.monotonic()
            return False
        return size >= at_least and time.monotonic() - seen["since"] >= steady

    wait_for(steady_now, what=f"{path.name} to hold at least {at_least} bytes, unchanged")
    return seen["size"]


def finish(client: subprocess.Popen[bytes], what: str) -> None:
    """Wait for an uploader and require that it succeeded."""
    try:
        output, _ = client.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        client.kill()
        client.communicate()
        pytest.fail(f"{what} did not finish")
    assert client.returncode == 0, f"{what} failed: {output.decode(errors='replace')}"


def kill(client: subprocess.Popen[bytes]) -> None:
    client.send_signal(signal.SIGKILL)
    client.communicate()


def the_one_import_is(spool: Spool, sandbox: Sandbox, data: bytes) -> None:
    """Exactly one import reached Canvas, of exactly ``data``, and its file is in done/ with a matching sidecar."""
    assert len(creates(sandbox)) == 1
    assert [sha256(stored) for stored in stored_uploads(sandbox)] == [sha256(data)]
    [filed] = spool.filed("done")
    assert filed.read_bytes() == data
    [sidecar] = spool.sidecars("done")
    assert sidecar["file"]["sha256"] == sha256(data) and sidecar["file"]["size"] == len(data)
    assert sidecar["outcome"] == "imported"


def held_open(daemon: DaemonThread, name: str = "users.csv") -> bool:
    """Whether the daemon found ``name`` settled but held open by a writer (and so left it in drop/)."""
    return ("open_writer", "nightly", name) in daemon.daemon.intake.conditions


def canary_filed(spool: Spool, name: str = "canary.csv") -> None:
    """Drop a small good file and wait until it is filed: whatever was in drop/ and settled before it was dropped
    has had every chance to be taken by then (a positive condition to wait on, instead of a sleep)."""
    spool.drop_file(name, HEADER + b"c1,canary,C,C,c@example.edu,active\n")
    wait_for(lambda: any(path.name.endswith(name) for path in spool.filed("done")), what=f"{name} filed")


# --- whole uploads: each gives exactly one import of the whole file ----------------------------------------------


def test_an_sftp_upload_into_its_final_name_that_stalls_past_settling_gives_one_import_of_the_whole_file(
    spool: Spool, sandbox: Sandbox, sshd: Sshd, daemon_process: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    data = users_csv(300_000)
    source = tmp_path / "users.csv"
    source.write_bytes(data)
    daemon = daemon_process()  # as root it can take read leases: the writer check is on
    client = sshd.sftp([f"put {quote(source)} {quote(spool.drop / 'users.csv')}"], limit_kbit=400, batch=tmp_path / "b")
    finish(client, "the sftp upload")
    wait_for(lambda: spool.filed("done"), what="the file filed")
    assert daemon.terminate() == 0
    the_one_import_is(spool, sandbox, data)
    held = [event for event in daemon.events() if event.get("event") == "file_still_open_for_writing"]
    assert held, "the upload never stalled past settle_seconds with the file open: the test proved nothing"


def test_an_sftp_upload_under_a_temp_name_renamed_into_place_gives_one_import_of_the_whole_file(
    spool: Spool, sandbox: Sandbox, sshd: Sshd, daemon_process: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    data = users_csv(300_000)
    source = tmp_path / "users.csv"
    source.write_bytes(data)
    daemon = daemon_process()
    temp, final = spool.drop / ".users.csv.tmp", spool.drop / "users.csv"
    client = sshd.sftp(
        [f"put {quote(source)} {quote(temp)}", f"rename {quote(temp)} {quote(final)}"],
        limit_kbit=400,
        batch=tmp_path / "b",
    )
    wait_for(lambda: size_of(temp) >= BURST, what="the first burst under the temp name")
    assert not final.exists()
    finish(client, "the sftp upload")
    wait_for(lambda: spool.filed("done"), what="the file filed")
    assert daemon.terminate() == 0
    the_one_import_is(spool, sandbox, data)
    assert spool.sidecars("done")[0]["file"]["name"] == "users.csv"


def test_an_rsync_copy_at_a_bandwidth_limit_writes_a_dot_temp_file_and_gives_one_import_of_the_whole_file(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    rsync = need("rsync")["rsync"]
    data = users_csv(300_000)
    source = tmp_path / "users.csv"
    source.write_bytes(data)
    daemon = daemon_process()
    client = subprocess.Popen(
        [rsync, "--bwlimit=100", str(source), f"{spool.drop}/"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    temps = wait_for(
        lambda: [path.name for path in spool.drop.iterdir() if path.name.startswith(".users.csv.")],
        what="rsync's dot-temp file",
    )
    finish(client, "rsync")
    wait_for(lambda: spool.filed("done"), what="the file filed")
    assert daemon.terminate() == 0
    the_one_import_is(spool, sandbox, data)
    assert not (spool.drop / temps[0]).exists()


@pytest.mark.parametrize("inplace", [False, True], ids=["temp-file", "inplace"])
def test_an_rsync_archive_copy_keeping_an_old_mtime_gives_one_import_of_the_whole_file(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess], tmp_path: Path, inplace: bool
) -> None:
    rsync = need("rsync")["rsync"]
    data = users_csv(300_000)
    source = tmp_path / "users.csv"
    source.write_bytes(data)
    old = 1_000_000_000  # 2001: a file that "looks settled" by its mtime from the first byte on
    os.utime(source, (old, old))
    daemon = daemon_process()
    extra = ["--inplace"] if inplace else []
    client = subprocess.Popen(
        [rsync, "-a", "--bwlimit=100", *extra, str(source), f"{spool.drop}/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    finish(client, "rsync -a")
    wait_for(lambda: spool.filed("done"), what="the file filed")
    assert daemon.terminate() == 0
    the_one_import_is(spool, sandbox, data)
    [filed] = spool.filed("done")
    assert filed.stat().st_mtime == old  # rsync -a kept it, and the daemon's renames did too


def test_without_the_writer_check_an_sftp_upload_whose_stalls_are_shorter_than_settling_gives_one_whole_import(
    spool: Spool, sandbox: Sandbox, sshd: Sshd, run_daemon: Callable[..., DaemonThread], tmp_path: Path
) -> None:
    spool.feed["settle_seconds"] = 5.0  # sftp -l 800 stalls about 2.6 s after its first burst
    data = users_csv(300_000)
    source = tmp_path / "users.csv"
    source.write_bytes(data)
    daemon = run_daemon()
    daemon.daemon.writer_check.probe = lambda fd: None  # no CAP_LEASE, or NFS: settling alone decides
    client = sshd.sftp([f"put {quote(source)} {quote(spool.drop / 'users.csv')}"], limit_kbit=800, batch=tmp_path / "b")
    finish(client, "the sftp upload")
    wait_for(lambda: spool.filed("done"), what="the file filed")
    daemon.stop()
    the_one_import_is(spool, sandbox, data)


# --- uploads killed half way ------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer_check", [True, False], ids=["writer-check", "no-writer-check"])
def test_an_sftp_upload_killed_half_way_under_a_temp_name_is_never_taken_and_its_whole_resend_is_imported_once(
    spool: Spool,
    sandbox: Sandbox,
    sshd: Sshd,
    run_daemon: Callable[..., DaemonThread],
    tmp_path: Path,
    writer_check: bool,
) -> None:
    data = users_csv(300_000)
    source = tmp_path / "users.csv"
    source.write_bytes(data)
    daemon = run_daemon()
    if not writer_check:
        daemon.daemon.writer_check.probe = lambda fd: None
    temp, final = spool.drop / ".users.csv.tmp", spool.drop / "users.csv"
    commands = [f"put {quote(source)} {quote(temp)}", f"rename {quote(temp)} {quote(final)}"]
    client = sshd.sftp(commands, limit_kbit=200, batch=tmp_path / "b1")
    wait_until_size_is_steady(temp, BURST)  # the first burst is in; the client stalls for about 10 s
    kill(client)
    assert 0 < size_of(temp) < len(data)
    canary_filed(spool)  # the partial file was closed and settled long before the canary was taken
    assert temp.exists() and not final.exists()
    assert len(creates(sandbox)) == 1  # the canary's
    finish(sshd.sftp(commands, batch=tmp_path / "b2"), "the whole resend")  # upstream's retry: same names
    wait_for(lambda: len(spool.filed("done")) == 2, what="the resent file filed")
    daemon.stop()
    assert len(creates(sandbox)) == 2
    [ours] = [item for item in spool.sidecars("done") if item["file"]["name"] == "users.csv"]
    assert ours["file"]["sha256"] == sha256(data)
    assert sha256(data) in [sha256(stored) for stored in stored_uploads(sandbox)]
    assert not temp.exists()


def test_an_sftp_upload_into_its_final_name_is_not_taken_while_its_stalled_client_holds_it_open(
    spool: Spool, sandbox: Sandbox, sshd: Sshd, run_daemon: Callable[..., DaemonThread], tmp_path: Path
) -> None:
    """With the writer check, a stalled session is waited for however long it stalls; when upstream's retry
    replaces the file whole before the stalled session dies, the whole file is imported once."""
    data = users_csv(300_000)
    source = tmp_path / "users.csv"
    source.write_bytes(data)
    final = spool.drop / "users.csv"
    daemon = run_daemon()
    stalled = sshd.sftp([f"put {quote(source)} {quote(final)}"], limit_kbit=200, batch=tmp_path / "b1")
    wait_until_size_is_steady(final, BURST)
    stalled.send_signal(signal.SIGSTOP)  # the session hangs: sshd's sftp-server keeps the file open
    try:
        wait_for(lambda: held_open(daemon), what="the daemon to find the settled file still open for writing")
        canary_filed(spool)  # settled many times over by now
        assert final.exists() and 0 < size_of(final) < len(data)
        assert len(creates(sandbox)) == 1  # the canary's
        finish(sshd.sftp([f"put {quote(source)} {quote(final)}"], batch=tmp_path / "b2"), "upstream's retry")
    finally:
        kill(stalled)  # SIGKILL ends a stopped process too; its sftp-server then closes the file
    wait_for(lambda: len(spool.filed("done")) == 2, what="the retried file filed")
    daemon.stop()
    [ours] = [item for item in spool.sidecars("done") if item["file"]["name"] == "users.csv"]
    assert ours["file"]["sha256"] == sha256(data)
    assert [sha256(stored) for stored in stored_uploads(sandbox)].count(sha256(data)) == 1
    assert len(creates(sandbox)) == 2


def test_an_sftp_upload_killed_half_way_into_its_final_name_is_taken_as_it_is_and_the_whole_resend_is_imported_once(
    spool: Spool, sandbox: Sandbox, sshd: Sshd, run_daemon: Callable[..., DaemonThread], tmp_path: Path
) -> None:
    """By design: once the client is gone sshd closes the file, and a closed file that settled is all the daemon can
    see (README "Folders": only a temp name marks a partial file). The sidecar says honestly which bytes went."""
    data = users_csv(300_000)
    source = tmp_path / "users.csv"
    source.write_bytes(data)
    final = spool.drop / "users.csv"
    daemon = run_daemon()
    client = sshd.sftp([f"put {quote(source)} {quote(final)}"], limit_kbit=200, batch=tmp_path / "b1")
    partial_size = wait_until_size_is_steady(final, BURST)
    wait_for(lambda: held_open(daemon), what="the daemon to find the settled file still open for writing")
    assert creates(sandbox) == []  # held open through the stall: not taken
    kill(client)
    partial = final.read_bytes()
    assert len(partial) == partial_size < len(data)
    wait_for(lambda: spool.all_filed(1), what="the partial file filed")
    finish(sshd.sftp([f"put {quote(source)} {quote(final)}"], batch=tmp_path / "b2"), "the whole resend")
    wait_for(lambda: spool.all_filed(2), what="the resent file filed")
    daemon.stop()
    sidecars = sorted(spool.sidecars("done") + spool.sidecars("failed"), key=lambda item: item["timeline"]["seen_at"])
    assert [item["file"]["sha256"] for item in sidecars] == [sha256(partial), sha256(data)]
    assert [sha256(stored) for stored in stored_uploads(sandbox)] == [sha256(partial), sha256(data)]
    assert sidecars[1]["outcome"] == "imported"
