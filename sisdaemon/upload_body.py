"""An upload's body: multipart/form-data framed around the file, which is read once in large blocks and hashed on the
way, with memory flat whatever its size.

Where the time goes (docs/performance.md "Upload speed", measured at 256 MiB on 2 cores over loopback): handing the
blocks to requests and urllib3, which pass each one to ``sendall`` as it is, costs less than ``curl -T``; the sha256
(OpenSSL's, ~1.5 GB/s here) costs about as much again, so it runs beside the send, in a thread of its own.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import threading
from collections.abc import Sequence

import urllib3.fields

from sisdaemon import effects

__all__ = ["HASH_AHEAD", "HASH_INLINE", "UPLOAD_BLOCK", "BodyDigest", "UploadBody", "multipart_frame"]

#: Bytes of the file read at a time for an upload (and handed to the connection as one ``sendall``).
UPLOAD_BLOCK = 1 << 20

#: Blocks read and sent but not hashed yet, at most: the memory the hash adds to an upload (a few MiB), and how far it
#: may fall behind the send before the send waits for it.
HASH_AHEAD = 2

#: Blocks smaller than this, given before any larger one, are hashed at once in the sender's thread: for a small file
#: (the most common upload) a thread's start, hand-over and join cost far more than its hash (issue 9).
HASH_INLINE = 256 * 1024


class BodyDigest:
    """The sha256 of the file bytes an upload sent, taken in a thread of its own while they are sent (``bytes``: how
    many were given to it).

    hashlib lets go of the GIL for a large block, so the hash of one block runs on the other core while the connection
    sends it, instead of taking turns with the send on one core (docs/performance.md "Upload speed": at 256 MiB over
    loopback, 1.7x curl -T's time in turns, about 1.2x side by side). The thread starts with the first block and ends
    at :meth:`finish`, which :meth:`hexdigest` calls and the sender calls however the upload ends, so no thread
    outlives its upload. At most :data:`HASH_AHEAD` blocks wait to be hashed: the memory it adds is bounded. Blocks
    under :data:`HASH_INLINE` given before the thread started (a small file's one block) are hashed at once instead.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.bytes = 0
        self._blocks: queue.Queue[bytes | None] = queue.Queue(maxsize=HASH_AHEAD)
        self._thread: threading.Thread | None = None

    def update(self, data: bytes) -> None:
        """Hash ``data`` after the bytes given before; waits while :data:`HASH_AHEAD` blocks are not hashed yet."""
        if self._thread is None and len(data) < HASH_INLINE:
            self.bytes += len(data)
            self._hash.update(data)  # in order: no block waits in the thread's queue while none started
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="upload-sha256", daemon=True)
            self._thread.start()
        self.bytes += len(data)
        self._blocks.put(data)

    def _work(self) -> None:
        while (block := self._blocks.get()) is not None:
            self._hash.update(block)

    def finish(self) -> None:
        """Wait until every block given is hashed, and end the thread. Idempotent."""
        if self._thread is not None:
            self._blocks.put(None)
            self._thread.join()
            self._thread = None

    def hexdigest(self) -> str:
        """The sha256 of every byte given, as 64 hex digits."""
        self.finish()
        return self._hash.hexdigest()


def multipart_frame(
    boundary: str, options: Sequence[tuple[str, str]], filename: str, content_type: str
) -> tuple[bytes, bytes]:
    """The bytes of a multipart/form-data body before and after the file's: each option a field, then the part
    ``attachment`` (headers made by urllib3's RequestField, which escapes the file name as browsers do)."""
    head = bytearray()
    for name, value in options:
        field = urllib3.fields.RequestField(name, value)
        field.make_multipart()
        head += f"--{boundary}\r\n{field.render_headers()}".encode() + value.encode() + b"\r\n"
    attachment = urllib3.fields.RequestField("attachment", b"", filename=filename)
    attachment.make_multipart(content_type=content_type)
    head += f"--{boundary}\r\n{attachment.render_headers()}".encode()
    return bytes(head), f"\r\n--{boundary}--\r\n".encode()


class UploadBody:
    """An upload's body for requests: ``head``, then ``size`` bytes of the open file ``fd`` from its start, then
    ``tail``; read once, :data:`UPLOAD_BLOCK` bytes at a time (whatever size the connection asks for), each block
    given to ``digest``. Its length is known up front, so requests sends a Content-Length, never chunks.

    Reports ``canvas.post_sent`` to the side-effect seam once its last byte was handed to the connection: from then
    on Canvas may have the whole request, and an import may exist whether or not its answer arrives. Raises OSError
    when the file ends before ``size`` bytes (it shrank while being sent). :meth:`close` ends the digest's thread.
    """

    def __init__(
        self, fd: int, size: int, *, head: bytes = b"", tail: bytes = b"", digest: BodyDigest | None = None
    ) -> None:
        self._fd = fd
        self._size = size
        self._offset = 0
        self._head = head
        self._tail = tail
        self._digest = digest
        self._reported = False
        self.len = len(head) + size + len(tail)  # requests sets Content-Length from it

    def __len__(self) -> int:
        return self.len

    def read(self, size: int = -1) -> bytes:
        """The next block of the body; b"" at its end (reported once). ``size`` is not heeded: blocks are large."""
        if self._head:
            data, self._head = self._head, b""
            return data
        if self._offset < self._size:
            data = os.pread(self._fd, min(UPLOAD_BLOCK, self._size - self._offset), self._offset)
            if not data:
                raise OSError(errno.EIO, f"the file ended at byte {self._offset} of {self._size} while being sent")
            self._offset += len(data)
            if self._digest is not None:
                self._digest.update(data)
            return data
        if self._tail:
            data, self._tail = self._tail, b""
            return data
        if not self._reported:
            self._reported = True
            effects.happened("canvas.post_sent")
        return b""

    def close(self) -> None:
        """Wait for the digest's thread to hash every block read, and end it. Idempotent."""
        if self._digest is not None:
            self._digest.finish()
