"""unpack: extract the verified rootfs of a template (a .deb or a staging root, full or
delta) into an empty directory."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from tmpl2deb import rootfs, tardelta
from tmpl2deb.errors import FormatError, IntegrityError, PrivilegeError, disk_full
from tmpl2deb.lock import claimed, remove_abandoned
from tmpl2deb.run import Process, Stage, grow_pipe, pipeline_failed, spawn
from tmpl2deb.tarstream import SafetyCheck, TarFilter, pump, writer
from tmpl2deb.template import Template, open_template, resolve_chain

__all__ = ["Template", "check_dest", "check_digest", "open_template", "rootfs_stream", "unpack"]

log = logging.getLogger(__name__)


def unpack(source: Path, dest: Path, package: str = "", with_parents: Sequence[Path] = ()) -> Path:
    """Extract the rootfs of the template at SOURCE into DEST (absent or empty), verified."""
    if os.geteuid() != 0:
        raise PrivilegeError(
            f"unpacking into {dest} needs root to restore owners, devices and capabilities; "
            "run as root (sudo)"
        )
    chain = resolve_chain(open_template(source, package), with_parents)
    check_dest(dest)
    remove_abandoned(dest.parent, f".{glob.escape(dest.name)}.tmpl2deb-*")
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmpl2deb-"))
    log.info("Unpacking %s (%s) into %s", chain[0].name, chain[0].source, dest)
    try:
        with claimed(staging):
            _extract(chain, staging)
        if dest.exists():
            dest.rmdir()  # empty, checked above; rename() cannot replace it on every fs
        staging.rename(dest)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if disk_full(err):
            raise FormatError(
                f"cannot unpack into {dest}: the disk is full (no space left on device); "
                "nothing was left there"
            ) from err
        raise
    return dest


def check_dest(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise FormatError(f"{dest} exists and is not a directory; give a new or empty directory")
    if dest.is_dir() and any(dest.iterdir()):
        raise FormatError(f"{dest} is not empty; unpack only into a new or empty directory")
    if not dest.parent.is_dir():
        raise FormatError(f"parent directory {dest.parent} does not exist")


def _extract(chain: Sequence[Template], target: Path) -> None:
    with ExitStack() as stack:
        decompressor = stack.enter_context(rootfs_stream(chain))
        tar = stack.enter_context(spawn(rootfs.tar_extract_argv(target), stdin=subprocess.PIPE))
        to_tar = writer(tar.stdin.fileno())

        def write(data: bytes | memoryview) -> None:
            try:
                to_tar(data)
            except BrokenPipeError:
                # GNU tar may exit at the end-of-archive marker without reading the padding
                # after it; its exit status (checked below) tells whether it was content.
                if not tar_filter.ended:
                    raise

        tar_filter = TarFilter(write, check=SafetyCheck())
        try:
            pump(decompressor.stdout.fileno(), tar_filter, progress=_progress)
        except (BrokenPipeError, FormatError) as err:
            pipeline_failed(err, upstream=decompressor, downstream=tar)
        decompressor.wait()
        tar.stdin.close()
        tar.wait()
    check_digest(chain[0], tar_filter.size, tar_filter.sha256.hexdigest(), chain[1:])


def check_digest(
    template: Template, size: int, digest: str, parents: Sequence[Template] = ()
) -> None:
    """The rootfs tar rebuilt for template (from its delta and parents, if any) must be the
    one it records."""
    meta = template.metadata
    if size != meta.rootfs_size or digest != meta.rootfs_sha256:
        chain = ", ".join(p.name for p in parents)
        through = f" (rebuilt through {chain})" if parents else ""
        raise IntegrityError(
            f"{template.source}: rootfs payload of {template.name}{through} does not match its "
            f"recorded sha256 ({digest[:16]}… != {meta.rootfs_sha256[:16]}…); "
            f"{'a template of the chain' if parents else 'the template'} is corrupt, "
            "fetch it again"
        )


def _progress(done: int) -> None:
    log.info("... %d MiB of rootfs tar unpacked", done >> 20)


@contextmanager
def rootfs_stream(chain: Sequence[Template]) -> Iterator[Stage]:
    """A stage whose stdout is the rootfs tar of chain[0], which the caller verifies: zstd of
    a full payload; for a delta, a thread applying the decoded tar delta to the parent's
    stream (itself rebuilt the same way). The parents' streams are not hashed again: only
    the right parents rebuild chain[0]'s recorded sha256."""
    with ExitStack() as stack:
        if len(chain) == 1:
            yield stack.enter_context(_decompress(chain[0]))
            return
        parent = stack.enter_context(rootfs_stream(chain[1:]))
        delta = stack.enter_context(_decompress(chain[0]))
        yield stack.enter_context(_Patched(parent, delta))


class _Patched:
    """The rootfs tar of a delta template, written to a pipe by a thread that applies the
    decoded tar delta to the parent's tar stream."""

    def __init__(self, parent: Stage, delta: Stage) -> None:
        self._parent, self._delta = parent, delta
        read_fd, self._write_fd = os.pipe()
        grow_pipe(self._write_fd)
        self._stdout = os.fdopen(read_fd, "rb", buffering=0)
        self._error: BaseException | None = None

        def apply() -> None:
            try:
                tardelta.apply_delta(parent.stdout.fileno(), delta.stdout.fileno(), self._write_fd)
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
        if isinstance(error, tardelta.Truncated):
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
    """zstd -dc of the payload span (of the .deb, or the whole file in a staging root)."""
    argv = ["zstd", "--decompress", "--stdout", "--quiet"]
    with spawn(argv, stdin=subprocess.PIPE) as process:
        feeder = threading.Thread(target=_feed, args=(template, process), daemon=True)
        feeder.start()
        try:
            yield process
        finally:
            if process.popen.poll() is None:
                process.popen.kill()  # on errors: else the feeder waits for zstd forever
            feeder.join()


def _send(out: int, fd: int, offset: int, left: int) -> None:
    while left:
        sent = os.sendfile(out, fd, offset, left)
        if not sent:
            return  # truncated file; zstd reports the short frame
        offset += sent
        left -= sent


def _feed(template: Template, process: Process) -> None:
    """Copy the payload span into zstd's stdin without passing it through Python buffers."""
    out = process.stdin.fileno()
    try:
        with template.payload.path.open("rb") as f:
            for offset, length in template.payload.pieces():
                _send(out, f.fileno(), offset, length)
    except OSError:
        pass  # zstd exited early; its error is reported by the reader side
    finally:
        with contextlib.suppress(OSError):
            process.stdin.close()
