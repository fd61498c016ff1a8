"""systemd's notify protocol (sd_notify(3)): READY, STATUS, WATCHDOG and STOPPING as datagrams."""

from __future__ import annotations

import contextlib
import os
import socket


def sd_notify(message: str) -> None:
    """Send a message to systemd's notify socket (``$NOTIFY_SOCKET``), if there is one.

    The protocol is one datagram (sd_notify(3)); it is small enough not to need libsystemd.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
