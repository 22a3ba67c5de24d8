"""Moving bytes between file descriptors: buffered reads that may hash what they see, gathered
writes, and the kernel's own copies (splice between a pipe and anything, sendfile from a file).
The tar reader (tarstream), the filter and the delta read and write through these."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterator

from tmpl2deb.errors import FormatError

READ_SIZE = 1 << 17  # what is read (headers, small files); the rest of a member is spliced
SPLICE_MIN = 1 << 14
_GATHER = 1 << 18  # small writes are joined up to this size


class Truncated(FormatError):
    """A stream ended early: the tool writing it (side) may have failed."""

    def __init__(self, side: str, message: str) -> None:
        super().__init__(message)
        self.side = side


class Reader:
    """Buffered reads from a file descriptor. With digest, every byte read also goes to a
    sha256; progress(offset) is called after every read from the fd."""

    def __init__(
        self,
        fd: int,
        side: str,
        *,
        digest: bool = False,
        progress: Callable[[int], object] | None = None,
    ) -> None:
        self._fd = fd
        self.side = side
        self._buf = bytearray(READ_SIZE)
        self._view = memoryview(self._buf)
        self._start = self._end = 0
        self.offset = 0  # bytes taken from the stream so far
        self.sha256 = hashlib.sha256() if digest else None
        self._progress = progress
        self._read = 0
        self._seek = not digest and stat.S_ISREG(os.fstat(fd).st_mode)
        self._splice: bool | None = None  # not known until tried

    def _short(self) -> Truncated:
        return Truncated(self.side, f"the {self.side} tar stream ends early (truncated)")

    def _refill(self) -> int:
        left = self._end - self._start
        if left:
            self._buf[:left] = bytes(self._view[self._start : self._end])
        self._start, self._end = 0, left
        got = os.readv(self._fd, [self._view[left:]])
        self._end += got
        self._moved(got)
        return got

    def _moved(self, n: int) -> None:
        self._read += n
        if self._progress is not None:
            self._progress(self._read)

    def _take(self, n: int) -> memoryview:
        view = self._view[self._start : self._start + n]
        if self.sha256 is not None:
            self.sha256.update(view)
        self._start += n
        self.offset += n
        return view

    def read(self, n: int) -> bytes:
        """Exactly n bytes (small reads: headers and records)."""
        while self._end - self._start < n:
            if not self._refill():
                raise self._short()
        return bytes(self._take(n))

    def chunks(self, n: int) -> Iterator[memoryview]:
        """n bytes as views, each valid until the next is asked for."""
        while n:
            if self._start == self._end and not self._refill():
                raise self._short()
            view = self._take(min(n, self._end - self._start))
            n -= len(view)
            yield view

    def same(self, other: Reader, n: int) -> bool:
        """Whether the next n bytes of both are equal; both stop where a difference was found
        (bytearray.startswith is a memcmp, comparing memoryviews is not)."""
        while n:
            for reader in (self, other):
                if reader._start == reader._end and not reader._refill():
                    raise reader._short()
            k = min(n, self._end - self._start, other._end - other._start)
            mine = self._start
            equal = self._buf.startswith(other._take(k), mine, mine + k)
            self._take(k)
            n -= k
            if not equal:
                return False
        return True

    def skip(self, n: int) -> None:
        buffered = min(n, self._end - self._start)
        if self._seek and n > buffered:
            # a regular file not hashed: members inserted whole are sent from it by offset,
            # not read through the buffer as well
            self._take(buffered)
            os.lseek(self._fd, n - buffered, os.SEEK_CUR)
            self.offset += n - buffered
            return
        for _ in self.chunks(n):
            pass

    def move(self, n: int, out: Output) -> None:
        """Send the next n bytes to out: with splice(2), in the kernel, when this reader's fd
        or out's is a pipe and nothing hashes the bytes (else through the buffer)."""
        if out.fd is None:  # nowhere to send them
            self.skip(n)
            out.size += n
            return
        buffered = min(n, self._end - self._start)
        if buffered == n:  # small members: all in the buffer already
            out.write(self._take(n))
            return
        if (
            self.sha256 is not None
            or out.sha256 is not None
            or self._splice is False
            or n - buffered < SPLICE_MIN
        ):
            for view in self.chunks(n):
                out.write(view)
            return
        out.write(self._take(buffered))
        out.flush()
        left = n - buffered
        moved = splice_all(self._fd, out.fd, left)
        if moved is None:  # neither side a pipe
            self._splice = False
            for view in self.chunks(left):
                out.write(view)
            return
        self._splice = True
        self.offset += moved
        out.size += moved
        self._moved(moved)
        if moved < left:
            raise self._short()

    def rest(self) -> Iterator[memoryview]:
        """Everything up to the end of the stream."""
        while self._start < self._end or self._refill():
            yield self._take(self._end - self._start)


class Output:
    """Writes to fd (None: nowhere), joining small pieces: one write per ~256 KiB, not two
    per member. Counts what it writes; with digest, hashes it."""

    def __init__(self, fd: int | None, *, digest: bool = False) -> None:
        self.fd = fd
        self._write = writer(fd) if fd is not None else None
        self._pending = bytearray()
        self.size = 0
        self.sha256 = hashlib.sha256() if digest else None

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self.sha256 is not None:
            self.sha256.update(data)
        if self._write is None:
            return
        if len(data) < 1 << 16:
            self._pending += data
            if len(self._pending) < _GATHER:
                return
            data = b""
        self.flush()
        self._write(data)

    def flush(self) -> None:
        if self._write is not None and self._pending:
            self._write(self._pending)
        self._pending.clear()


def writer(fd: int) -> Callable[[bytes | memoryview], None]:
    """A write function that writes everything to fd (os.write may write less)."""

    def write(data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    return write


def splice_all(fd_in: int, fd_out: int, count: int) -> int | None:
    """Move count bytes from fd_in to fd_out; the bytes moved (fewer at the end of the
    input), or None when the kernel cannot splice between these two."""
    moved = 0
    while moved < count:
        try:
            n = os.splice(fd_in, fd_out, count - moved)
        except OSError as err:
            if err.errno == errno.EINVAL and not moved:
                return None
            raise
        if not n:
            break
        moved += n
    return moved


def send_file(out: int, fd: int, offset: int, count: int) -> int:
    """sendfile(2) count bytes of file fd from offset to out; the bytes sent (fewer when the
    file ends early)."""
    sent = 0
    while sent < count:
        n = os.sendfile(out, fd, offset + sent, count - sent)
        if not n:
            break
        sent += n
    return sent
