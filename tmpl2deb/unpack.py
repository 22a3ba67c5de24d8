"""unpack: extract the verified rootfs of a template (a .deb or a staging root, full or
delta) into an empty directory."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tmpl2deb import rootfs
from tmpl2deb.errors import FormatError, IntegrityError, PrivilegeError
from tmpl2deb.run import Process, pipeline_failed, spawn
from tmpl2deb.tarstream import SafetyCheck, TarFilter, pump, writer
from tmpl2deb.template import Template, open_template, resolve_chain

__all__ = [
    "ParentCheck",
    "Template",
    "check_dest",
    "check_digest",
    "open_template",
    "parent_tar",
    "rootfs_stream",
    "unpack",
]

log = logging.getLogger(__name__)

# zstd refuses frames with a window above 128 MiB unless told; a delta's window spans the
# parent's tar, and 2 GiB (--long=31) is the largest zstd has.
ZSTD_MAX_WINDOW_LOG = 31
# zstd mallocs a copy of the parent and a window as large: with transparent huge pages for
# malloc (glibc >= 2.35; ignored where THP is off) it faults them in 512 times less often,
# which more than halves a patch's decoding time.
ZSTD_PATCH_ENV = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def unpack(source: Path, dest: Path, package: str = "", with_parents: Sequence[Path] = ()) -> Path:
    """Extract the rootfs of the template at SOURCE into DEST (absent or empty), verified."""
    if os.geteuid() != 0:
        raise PrivilegeError(
            f"unpacking into {dest} needs root to restore owners, devices and capabilities; "
            "run as root (sudo)"
        )
    chain = resolve_chain(open_template(source, package), with_parents)
    check_dest(dest)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmpl2deb-"))
    log.info("Unpacking %s (%s) into %s", chain[0].name, chain[0].source, dest)
    try:
        _extract(chain, staging)
        if dest.exists():
            dest.rmdir()  # empty, checked above; rename() cannot replace it on every fs
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
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
    check_digest(chain[0], tar_filter.size, tar_filter.sha256.hexdigest())


def check_digest(template: Template, size: int, digest: str) -> None:
    meta = template.metadata
    if size != meta.rootfs_size or digest != meta.rootfs_sha256:
        raise IntegrityError(
            f"{template.source}: rootfs payload of {template.name} does not match its recorded "
            f"sha256 ({digest[:16]}… != {meta.rootfs_sha256[:16]}…); "
            "the template is corrupt, fetch it again"
        )


def _progress(done: int) -> None:
    log.info("... %d MiB of rootfs tar unpacked", done >> 20)


@contextmanager
def rootfs_stream(chain: Sequence[Template]) -> Iterator[Process]:
    """A zstd process whose stdout is the rootfs tar of chain[0] (the caller verifies it).

    For a delta, the parents are rebuilt first, and their digests are checked while the
    child is decoded; a parent that does not match fails the block, whatever else failed.
    """
    with ParentCheck() as check, ExitStack() as stack:
        parent = stack.enter_context(parent_tar(chain[1:], check)) if len(chain) > 1 else None
        yield stack.enter_context(_decompress(chain[0], parent))


class ParentCheck:
    """sha256 of rebuilt parent tars, computed in background threads from a read-only map
    of their memory files; on leaving the block each must match, bottom of the chain first."""

    def __init__(self) -> None:
        self._threads: list[tuple[Template, threading.Thread, list[tuple[int, str]]]] = []

    def __enter__(self) -> ParentCheck:
        return self

    def start(self, template: Template, fd: int) -> None:
        size = os.fstat(fd).st_size
        view = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else b""
        result: list[tuple[int, str]] = []

        def digest() -> None:
            result.append((size, hashlib.sha256(view).hexdigest()))

        thread = threading.Thread(target=digest, daemon=True)
        thread.start()
        self._threads.append((template, thread, result))

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        for template, thread, result in self._threads:
            thread.join()
            try:
                check_digest(template, *result[0])
            except IntegrityError as mismatch:
                raise mismatch from error  # the cause of whatever else went wrong


@contextmanager
def parent_tar(chain: Sequence[Template], check: ParentCheck) -> Iterator[int]:
    """A memory file (memfd) with the rootfs tar of chain[0], for zstd
    --patch-from=/dev/fd/N: zstd holds the whole parent in memory anyway, and a file on
    disk would only add write-back I/O while the child is being extracted."""
    template = chain[0]
    log.info("Rebuilding the rootfs tar of %s", template.name)
    fd = os.memfd_create(f"tmpl2deb-{template.metadata.package}.tar", os.MFD_CLOEXEC)
    try:
        with ExitStack() as stack:
            parent = stack.enter_context(parent_tar(chain[1:], check)) if len(chain) > 1 else None
            stack.enter_context(_decompress(template, parent, stdout=fd)).wait()
        check.start(template, fd)
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _decompress(
    template: Template, parent: int | None = None, stdout: int | None = None
) -> Iterator[Process]:
    """zstd -dc of the payload span (of the .deb, or the whole file in a staging root),
    patched against the parent tar in memory file PARENT for a delta template, to a pipe
    (or to STDOUT)."""
    argv = ["zstd", "--decompress", "--stdout", "--quiet"]
    fds: tuple[int, ...] = ()
    env = None
    if parent is not None:
        argv += [f"--long={ZSTD_MAX_WINDOW_LOG}", f"--patch-from=/dev/fd/{parent}"]
        fds, env = (parent,), ZSTD_PATCH_ENV
    with spawn(argv, stdin=subprocess.PIPE, stdout=stdout, env=env, pass_fds=fds) as process:
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
