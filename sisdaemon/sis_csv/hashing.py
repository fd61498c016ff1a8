"""A file reader that takes the file's sha256 from the bytes its user reads anyway (the pre-flight check), so that
a file's hash costs no read of its own.

Reads that run on from where the hash has got to (``frontier``) feed the hash; a read that starts past it (a zip
reader jumping to its central directory) or lies wholly behind it (read again) does not. :meth:`HashingReader.finish`
then reads only what the hash has not seen yet, from the frontier to the end: nothing for a CSV, which is read
straight through, and for a zip whatever its reader skipped (members it did not open, the central directory it read
first). The digest is always of the whole file, in order, each byte once.
"""

from __future__ import annotations

import hashlib
import io
from typing import IO

#: Block size of :meth:`HashingReader.finish`'s reads.
FINISH_BLOCK = 1 << 20


class HashingReader(io.RawIOBase):
    """A seekable binary reader over ``raw`` (an open binary file, positioned at 0) that hashes what is read in
    order. Use :meth:`finish` once reading is over for the hex sha256 of the whole file."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self._digest = hashlib.sha256()
        self.frontier = 0  # bytes [0, frontier) are in the digest
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._position = self._raw.seek(offset, whence)
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self._raw.seek(self._position)
        data = self._raw.read(len(buffer))
        count = len(data)
        buffer[:count] = data
        self._take(self._position, data)
        self._position += count
        return count

    def read(self, size: int | None = -1) -> bytes:
        self._raw.seek(self._position)
        data = self._raw.read() if size is None or size < 0 else self._raw.read(size)
        self._take(self._position, data)
        self._position += len(data)
        return data

    def _take(self, start: int, data: bytes) -> None:
        end = start + len(data)
        if start <= self.frontier < end:
            self._digest.update(memoryview(data)[self.frontier - start :])
            self.frontier = end

    def finish(self) -> str:
        """Hash what was not read yet (from the frontier to the end) and return the hex sha256 of the whole file."""
        self._raw.seek(self.frontier)
        while block := self._raw.read(FINISH_BLOCK):
            self._digest.update(block)
            self.frontier += len(block)
        self._raw.seek(self._position)
        return self._digest.hexdigest()
