"""systemd notifications over a real AF_UNIX datagram socket: delivered when read, dropped (never waited for) when
the supervisor stops reading."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sisdaemon.notify import sd_notify


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing for systemd's notify socket, and its address."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        yield sock, str(path)


def fill(address: str) -> int:
    """Send datagrams to ``address`` until its receive queue is full; how many went in."""
    sent = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        while True:
            try:
                sender.sendto(b"WATCHDOG=1", address)
            except BlockingIOError:
                return sent
            sent += 1
            assert sent < 1_000_000, "the queue never filled"


def test_a_message_reaches_the_notify_socket(supervisor: tuple[socket.socket, str]) -> None:
    sock, address = supervisor
    assert sd_notify("READY=1\nSTATUS=watching", environ={"NOTIFY_SOCKET": address}) is True
    sock.settimeout(5)
    assert sock.recv(4096) == b"READY=1\nSTATUS=watching"


def test_a_full_notify_queue_drops_the_message_at_once_instead_of_blocking(
    supervisor: tuple[socket.socket, str],
) -> None:
    _, address = supervisor
    assert fill(address) > 0

    started = time.monotonic()
    delivered = sd_notify("STOPPING=1", environ={"NOTIFY_SOCKET": address})
    elapsed = time.monotonic() - started

    assert delivered is False
    assert elapsed < 0.5


def test_an_abstract_notify_socket_is_reached_by_its_at_sign_name() -> None:
    name = f"sisdaemon-test-{os.getpid()}-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert sd_notify("WATCHDOG=1", environ={"NOTIFY_SOCKET": "@" + name}) is True
        sock.settimeout(5)
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_without_a_notify_socket_nothing_is_sent_and_nothing_raises(tmp_path: Path) -> None:
    assert sd_notify("READY=1", environ={}) is False
    assert sd_notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")}) is False
    assert sd_notify("READY=1", environ={"NOTIFY_SOCKET": "relative/not-a-socket"}) is False
