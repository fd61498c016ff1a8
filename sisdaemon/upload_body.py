"""An upload's body: multipart/form-data framed around the file, which is read once in large blocks and hashed on the
way, with memory flat whatever its size.

Where the time goes (docs/performance.md "Upload speed", measured at 256 MiB on 2 cores over loopback): handing the
blocks to requests and urllib3, which pass each one to ``sendall`` as it is, costs less than ``curl -T``; the sha256
(OpenSSL's, ~1.4 GB/s here) is the rest.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Sequence

import urllib3.fields

from sisdaemon import effects

__all__ = ["UPLOAD_BLOCK", "BodyDigest", "UploadBody", "multipart_frame"]

#: Bytes of the file read at a time for an upload (and handed to the connection as one ``sendall``).
UPLOAD_BLOCK = 1 << 20


class BodyDigest:
    """The sha256 of the file bytes an upload sent, taken as they are read (``bytes``: how many).

    In the sending thread, between one block's ``sendall`` and the next: on a real link the kernel's socket buffer
    (several MiB) keeps the link busy while the next block is hashed, so the hash adds no time. A hashing thread of
    its own was measured and cost more (docs/performance.md "Upload speed").
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.bytes = 0

    def update(self, data: bytes) -> None:
        """Hash ``data`` after the bytes given before."""
        self._hash.update(data)
        self.bytes += len(data)

    def hexdigest(self) -> str:
        """The sha256 of every byte given, as 64 hex digits."""
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
    when the file ends before ``size`` bytes (it shrank while being sent).
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
