"""unpack: extract the verified rootfs of a template (a .deb or a staging root, full or
delta) into an empty directory."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from tmpl2deb import rootfs, tardelta
from tmpl2deb.errors import (
    FormatError,
    HostError,
    InputError,
    IntegrityError,
    PrivilegeError,
    disk_full,
)
from tmpl2deb.lock import claimed, remove_abandoned
from tmpl2deb.progress import Progress
from tmpl2deb.pump import Output, Reader, Truncated, send_file
from tmpl2deb.run import Process, Stage, grow_pipe, pipeline_failed, spawn
from tmpl2deb.tarstream import SafetyCheck, filter_tar
from tmpl2deb.template import Expect, Template, check_match, open_template, resolve_chain

__all__ = ["Template", "check_dest", "check_digest", "open_template", "rootfs_stream", "unpack"]

log = logging.getLogger(__name__)


def unpack(
    source: Path,
    dest: Path,
    package: str = "",
    with_parents: Sequence[Path] = (),
    expect: Expect | None = None,
) -> Path:
    """Extract the rootfs of the template at SOURCE into DEST (absent or empty), verified;
    with expect, refuse a template that is not what the build needs (check_match)."""
    if os.geteuid() != 0:
        raise PrivilegeError(
            f"unpacking into {dest} needs root to restore owners, devices and capabilities; "
            "run as root (sudo)"
        )
    template = open_template(source, package)
    if expect is not None:
        check_match(template.metadata, expect)
    chain = resolve_chain(template, with_parents)
    check_dest(dest)
    remove_abandoned(dest.parent, f".{glob.escape(dest.name)}.tmpl2deb-*")
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmpl2deb-"))
    log.info("Unpacking %s (%s) into %s", chain[0].name, chain[0].source, dest)
    start = time.monotonic()
    try:
        with claimed(staging):
            _extract(chain, staging)
        if dest.exists():
            dest.rmdir()  # empty, checked above; rename() cannot replace it on every fs
        staging.rename(dest)
        log.info("Unpacked %s in %.1f s", chain[0].name, time.monotonic() - start)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if disk_full(err):
            raise HostError(
                f"cannot unpack into {dest}: the disk is full (no space left on device); "
                "nothing was left there"
            ) from err
        raise
    return dest


def check_dest(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise InputError(f"{dest} exists and is not a directory; give a new or empty directory")
    if dest.is_dir() and any(dest.iterdir()):
        raise InputError(f"{dest} is not empty; unpack only into a new or empty directory")
    if not dest.parent.is_dir():
        raise InputError(f"parent directory {dest.parent} does not exist")


def _extract(chain: Sequence[Template], target: Path) -> None:
    with ExitStack() as stack:
        decompressor = stack.enter_context(rootfs_stream(chain))
        tar = stack.enter_context(spawn(rootfs.tar_extract_argv(target), stdin=subprocess.PIPE))
        progress = Progress("Unpacking", chain[0].metadata.rootfs_size)
        reader = Reader(decompressor.stdout.fileno(), "rootfs", progress=progress)
        out = Output(tar.stdin.fileno(), digest=chain[0].metadata.format == 1)
        try:
            result = filter_tar(reader, out, check=SafetyCheck())
        except (BrokenPipeError, FormatError) as err:
            pipeline_failed(err, upstream=decompressor, downstream=tar)
        progress.close()
        decompressor.wait()
        tar.stdin.close()
        tar.wait()
    check_digest(chain[0], result.size, result.sha256 or "", chain[1:])


def check_digest(
    template: Template, size: int, digest: str, parents: Sequence[Template] = ()
) -> None:
    """The rootfs tar rebuilt for template (from its delta and parents, if any) must be the
    one it records."""
    meta = template.metadata
    sha_differs = meta.format == 1 and digest != meta.rootfs_sha256  # format 2: the payloads
    if size != meta.rootfs_size or sha_differs:
        chain = ", ".join(p.name for p in parents)
        through = f" (rebuilt through {chain})" if parents else ""
        what = (
            f"sha256 ({digest[:16]}… != {meta.rootfs_sha256[:16]}…)"
            if sha_differs
            else f"size ({size} != {meta.rootfs_size} bytes)"
        )
        raise IntegrityError(
            f"{template.source}: rootfs payload of {template.name}{through} does not match its "
            f"recorded {what}; "
            f"{'a template of the chain' if parents else 'the template'} is corrupt, "
            "fetch it again"
        )


@contextmanager
def rootfs_stream(chain: Sequence[Template]) -> Iterator[Stage]:
    """A stage whose stdout is the rootfs tar of chain[0]: zstd of a full payload; for a delta,
    a thread applying the decoded tar delta to the parent's stream (itself rebuilt the same
    way). Format 2: every payload's sha256 is checked when the context ends (a corrupt one
    raises IntegrityError); the caller checks the size (check_digest). Format 1 at the top:
    the caller checks the sha256 of the whole tar, and only the right parents rebuild it."""
    with ExitStack() as stack:
        if len(chain) == 1:
            yield stack.enter_context(_decompress(chain[0]))
            return
        parent = stack.enter_context(rootfs_stream(chain[1:]))
        delta = stack.enter_context(_decompress(chain[0]))
        check = None
        if chain[0].metadata.format >= 2 and chain[1].metadata.format == 1:
            # a format 1 parent is proven by the sha256 of its rootfs tar only

            def check(size: int, digest: str) -> None:
                check_digest(chain[1], size, digest, chain[2:])

        yield stack.enter_context(_Patched(parent, delta, check))


class _Patched:
    """The rootfs tar of a delta template, written to a pipe by a thread that applies the
    decoded tar delta to the parent's tar stream."""

    def __init__(
        self, parent: Stage, delta: Stage, check: Callable[[int, str], None] | None
    ) -> None:
        self._parent, self._delta = parent, delta
        read_fd, self._write_fd = os.pipe()
        grow_pipe(self._write_fd)
        self._stdout = os.fdopen(read_fd, "rb", buffering=0)
        self._error: BaseException | None = None

        def apply() -> None:
            try:
                tardelta.apply_delta(
                    parent.stdout.fileno(), delta.stdout.fileno(), self._write_fd, check
                )
            except BaseException as err:  # reported by wait()
                self._error = err
            finally:
                os.close(self._write_fd)

        self._thread = threading.Thread(target=apply, daemon=True)
        self._thread.start()

    @property
    def stdout(self) -> IO[bytes]:
        return self._stdout

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._stdout.close()  # the thread then stops on its next write

    def wait(self) -> None:
        """Raise what went wrong: a tool's failure that cut a stream short comes first."""
        self._thread.join()
        error = self._error
        if error is None:
            self._parent.wait()
            self._delta.wait()
            return
        if isinstance(error, Truncated):
            (self._parent if error.side == "parent" else self._delta).wait()
        self._parent.close()
        self._delta.close()
        if isinstance(error, BrokenPipeError):
            return  # our reader stopped: its own failure is the one to report
        raise error

    def abort(self) -> None:
        """Stop the thread: our reader is gone, and the tools feeding it are killed (their
        pipes are not closed under the thread, which may be reading them)."""
        self.close()
        self._parent.abort()
        self._delta.abort()
        self._thread.join()

    def __enter__(self) -> _Patched:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


@contextmanager
def _decompress(template: Template) -> Iterator[Process]:
    """zstd -dc of the payload span of the .deb. A format 2 payload's sha256 is checked when
    the stream has been read (IntegrityError), unless apt checked the .deb (staged)."""
    argv = ["zstd", "--decompress", "--stdout", "--quiet"]
    verify = template.metadata.format >= 2 and not template.verified
    digest = hashlib.sha256() if verify else None
    if template.verified:
        log.debug("%s: checked by apt against the signed index when staged", template.source)
    with spawn(argv, stdin=subprocess.PIPE) as process:
        feeder = threading.Thread(target=_feed, args=(template, process, digest), daemon=True)
        feeder.start()
        try:
            yield process
        finally:
            if process.popen.poll() is None:
                process.popen.kill()  # on errors: else the feeder waits for zstd forever
            feeder.join()
    if digest is not None and digest.hexdigest() != template.metadata.payload_sha256:
        raise IntegrityError(
            f"{template.source}: payload of {template.name} does not match its recorded sha256 "
            f"({digest.hexdigest()[:16]}… != {template.metadata.payload_sha256[:16]}…); the "
            "template is corrupt, fetch it again"
        )


def _send_hashed(out: int, fd: int, offset: int, left: int, digest: hashlib._Hash) -> None:
    """Like send_file, through a buffer that the digest sees (the GIL is released for both)."""
    buf = bytearray(min(left, 1 << 20))
    view = memoryview(buf)
    while left:
        n = os.preadv(fd, [view[: min(left, len(buf))]], offset)
        if not n:
            return
        digest.update(view[:n])
        done = 0
        while done < n:
            done += os.write(out, view[done:n])
        offset += n
        left -= n


def _feed(template: Template, process: Process, digest: hashlib._Hash | None) -> None:
    """Copy the payload span into zstd's stdin: with sendfile, or hashed on the way."""
    out = process.stdin.fileno()
    try:
        with template.payload.path.open("rb") as f:
            for offset, length in template.payload.pieces():
                if digest is None:
                    send_file(out, f.fileno(), offset, length)  # short: zstd reports it
                else:
                    _send_hashed(out, f.fileno(), offset, length, digest)
    except OSError:
        pass  # zstd exited early; its error is reported by the reader side
    finally:
        with contextlib.suppress(OSError):
            process.stdin.close()
