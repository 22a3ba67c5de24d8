"""A writer's lock on a directory: flock(2), so the kernel releases it when its holder dies."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from tmpl2deb.errors import Tmpl2debError

log = logging.getLogger(__name__)

LOCK_NAME = ".tmpl2deb.lock"
DEFAULT_TIMEOUT = 600.0  # seconds: a publish of a large template into a busy repository
_POLL = 0.05
_REPORT_EVERY = 5.0


def _holder(path: Path) -> str:
    """What the lock file says about the process holding it (written when it took it)."""
    try:
        return path.read_text().strip() or "another process"
    except OSError:
        return "another process"


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on PATH, or None if someone else holds it.

    A lock file may be removed by the holder that created it (a first publish that failed);
    after taking the lock, check that PATH is still the file we locked, else try again.
    """
    path.parent.mkdir(parents=True, exist_ok=True)  # removed by a first writer that failed
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        same = path.stat().st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def locked(directory: Path, what: str, timeout: float = DEFAULT_TIMEOUT) -> Iterator[Path]:
    """Hold DIRECTORY's writer lock (waiting up to TIMEOUT seconds); yields the lock file."""
    path = directory / LOCK_NAME
    start = next_report = time.monotonic()
    while (fd := _try_lock(path)) is None:
        now = time.monotonic()
        if now - start >= timeout:
            raise Tmpl2debError(
                f"gave up after {timeout:.0f} s waiting for the lock on {directory}, held by "
                f"{_holder(path)}; try again later or give a longer --lock-timeout"
            )
        if now >= next_report:
            log.info("Waiting for the lock on %s, held by %s", directory, _holder(path))
            next_report = now + _REPORT_EVERY
        time.sleep(_POLL)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} ({what})\n".encode())
        yield path
    finally:
        os.close(fd)


# -- temporaries of a writer that may be killed --------------------------------------------------


def claim(fd: int) -> None:
    """Mark the temporary open as FD as in use, until it is closed (or its process dies)."""
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


@contextlib.contextmanager
def claimed(directory: Path) -> Iterator[None]:
    """Hold a temporary directory as in use."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        claim(fd)
        yield
    finally:
        os.close(fd)


def remove_abandoned(directory: Path, pattern: str) -> None:
    """Remove the temporaries matching PATTERN in DIRECTORY that no live process holds: what a
    tmpl2deb killed with SIGKILL (or a power cut) left behind."""
    for path in directory.glob(pattern):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # another tmpl2deb is working in it
        finally:
            os.close(fd)
        log.warning("Removing %s, left by a tmpl2deb that was killed", path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
