"""pump: a tar stream read through the filter, the data of its members spliced in the kernel."""

from __future__ import annotations

import errno
import os

from tmpl2deb.progress import Progress
from tmpl2deb.tarstream import TarFilter


def pump(
    fd_in: int,
    tar_filter: TarFilter,
    *,
    progress: Progress | None = None,
    splice_to: int | None = None,
) -> None:
    """Read fd_in to its end through tar_filter, calling progress(bytes read) after each read
    (progress.Progress keeps it cheap). With splice_to (the fd the filter writes to), member
    data the filter passes unseen moves from fd_in to it in the kernel (splice(2): one of
    them a pipe), not through Python: the headers are read and checked here, and the data of
    a member goes on only after its header did."""
    buf = bytearray(READ_SIZE)
    view = memoryview(buf)
    done = 0
    while True:
        if splice_to is not None and (left := tar_filter.passthrough()) >= SPLICE_MIN:
            moved = splice_all(fd_in, splice_to, left)
            if moved is None:
                splice_to = None  # neither side a pipe: read and write
                continue
            tar_filter.passed(moved)
            done += moved
            if progress is not None:
                progress(done)
            if moved < left:
                break  # the input ended inside a member: finish() says so
            continue
        n = os.readv(fd_in, [buf])
        if not n:
            break
        tar_filter.feed(view[:n])
        done += n
        if progress is not None:
            progress(done)
    if progress is not None:
        progress.close()
    tar_filter.finish()


READ_SIZE = 1 << 17  # what is read (headers, small files); the rest of a member is spliced
SPLICE_MIN = 1 << 14


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
