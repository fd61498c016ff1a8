"""systemd's notify protocol (sd_notify(3)): one datagram to ``$NOTIFY_SOCKET``, never waited for.

The protocol is small enough not to need libsystemd. A supervisor that stops reading its socket fills the queue; a
blocking send would then stall the daemon (a lost ``STOPPING=1`` turned a stop into a 15 s wait, issue 7 defect 12),
so every send here is non-blocking and a message that does not fit is dropped.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def sd_notify(message: str, *, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``message`` (e.g. ``"READY=1\\nSTATUS=watching"``) to systemd's notify socket, if there is one.

    ``environ``: where ``NOTIFY_SOCKET`` is read (the process environment by default). The address is a socket
    file's absolute path, or an abstract socket name starting with ``@``. Never blocks and never raises: returns
    True when the datagram was queued, False when there is no socket, it cannot be reached, or its queue is full
    (the message is then dropped, as libsystemd would time out and drop it too).
    """
    address = environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]  # the abstract namespace (sd_notify(3))
    elif not address.startswith("/"):
        return False  # unset, or not an address systemd would give
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
            sock.sendto(message.encode("utf-8", "replace"), socket.MSG_DONTWAIT, address)
    except OSError:  # EAGAIN (queue full), ENOENT, ECONNREFUSED, EMSGSIZE, ...: a notification is never worth a stall
        return False
    return True
