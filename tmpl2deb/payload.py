"""The payload of pack: the rootfs tar stream (a directory through GNU tar, or a tarball),
filtered (excludes, safety), compressed with zstd; for a delta template, the tar delta
against the parent's rootfs stream, or a full payload when the delta does not pay off."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tmpl2deb import debformat, rootfs, tardelta
from tmpl2deb.errors import CommandError, FormatError, PrivilegeError, os_error
from tmpl2deb.excludes import DpkgLists, ExcludeRules, OwnedPaths, Selection, read_owned
from tmpl2deb.lock import claimed
from tmpl2deb.metadata import DELTA, FULL
from tmpl2deb.progress import Progress
from tmpl2deb.pump import Output, Reader
from tmpl2deb.run import Process, pipeline_failed, run, spawn
from tmpl2deb.tarstream import CAPTURE_LIMIT, Action, Filtered, Member, filter_tar
from tmpl2deb.template import Template
from tmpl2deb.unpack import check_digest, rootfs_stream

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PayloadOptions:
    """What of pack's options the payload depends on."""

    excludes: ExcludeRules
    level: int
    mtime: int  # SOURCE_DATE_EPOCH: the clamp of GNU tar's mtimes
    output: Path  # where a delta's temporaries go, next to the .deb


def zstd_argv(level: int) -> list[str]:
    """zstd on all cores. At levels 3 to 8 (a 2 MiB window) in jobs of 4 MiB, half zstd's
    default: its memory drops from about 60 to 35 MiB on 2 cores, for a payload about 0.7 %
    larger and no loss of speed (minbase rootfs tar, zstd 1.5.4). The output stays the same
    whatever the number of cores."""
    argv = ["zstd", "--quiet", "--threads=0", f"-{level}", "--stdout"]
    return [*argv, "-B4MiB"] if 3 <= level <= 8 else argv


def full_payload(
    source: Path, options: PayloadOptions, write: Callable[[memoryview], None]
) -> Filtered:
    """Run source | filter | zstd, handing zstd's output to write(); return the filter. A tree
    whose walk chose every entry goes from tar to zstd directly (nothing to filter)."""
    zstd = zstd_argv(options.level)
    with ExitStack() as stack:
        rootfs_tar = _open_source(source, options, stack)
        if rootfs_tar.direct:
            return _direct_payload(source, rootfs_tar, zstd, write)
        read_fd, producer = rootfs_tar.start(stack)
        compressor = stack.enter_context(spawn(zstd, stdin=subprocess.PIPE))
        drain = _Drain(compressor, write)
        stack.callback(drain.stop)  # first, on the way out: before the .deb is closed
        progress = Progress("Packing", rootfs_tar.total)
        reader = Reader(read_fd, "rootfs", progress=progress)
        out = Output(compressor.stdin.fileno())  # format 2: the payload is hashed, not the tar
        try:
            stream = filter_tar(reader, out, decide=_decide(rootfs_tar), capture=rootfs.CAPTURED)
        except (BrokenPipeError, FormatError) as err:
            with contextlib.suppress(OSError):
                compressor.stdin.close()  # lets zstd, and so the drain thread, finish
            drain.join()
            with _privilege_hint():
                pipeline_failed(err, upstream=producer, downstream=compressor)
        progress.close()
        if producer is not None:
            with _privilege_hint():
                producer.wait()
        compressor.stdin.close()
        drain.join()
        compressor.wait()
    return stream


def _direct_payload(
    source: Path, rootfs_tar: _RootfsTar, zstd: list[str], write: Callable[[memoryview], None]
) -> Filtered:
    """tar | zstd with nothing in between, zstd's output handed to write()."""
    with ExitStack() as stack:
        tar = stack.enter_context(spawn(rootfs_tar.argv, stdin=subprocess.PIPE))
        compressor = stack.enter_context(spawn(zstd, stdin=tar.stdout))
        tar.stdout.close()  # zstd's now
        progress = Progress("Packing")
        drain = _Drain(compressor, write, lambda: progress(_written(tar)))
        stack.callback(drain.stop)
        rootfs_tar.feed(tar, progress)
        drain.join()
        progress.close()
        with _privilege_hint():
            stderr = tar.wait()
        compressor.wait()
    return _walked_stream(source, rootfs_tar, rootfs.tar_size(stderr))


def _walked_stream(source: Path, rootfs_tar: _RootfsTar, size: int) -> Filtered:
    """What the filter would have found in the stream of a tree packed directly."""
    assert rootfs_tar.walked is not None
    captured = {}
    for name in rootfs_tar.walked.found:  # the walk looked for rootfs.CAPTURED
        path = Path(os.fsdecode(os.fsencode(source) + b"/" + name))
        try:
            with path.open("rb") as f:
                captured[name] = f.read(CAPTURE_LIMIT)
        except OSError as err:
            raise os_error(err, f"cannot read {path}") from err
    return Filtered(size, None, rootfs_tar.walked.entries, captured)


def _written(process: Process) -> int:
    """How many bytes a process has written so far (for progress; 0 if unknown)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{process.popen.pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


# a delta that is more than this share of the full payload does not pay off
DELTA_WORTH = 0.5


def delta_payload(
    source: Path,
    options: PayloadOptions,
    chain: list[Template],
    write: Callable[[memoryview], None],
) -> tuple[Filtered, str]:
    """Write the zstd of a tar delta of the rootfs tar against the parent's (tardelta), or
    fall back to a full payload when the delta does not pay off; return the stream and the
    kind."""
    work = Path(tempfile.mkdtemp(dir=options.output, prefix=".tmpl2deb-delta-"))
    try:
        with claimed(work):
            return _delta_in(work, source, options, chain, write)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _delta_in(
    work: Path,
    source: Path,
    options: PayloadOptions,
    chain: list[Template],
    write: Callable[[memoryview], None],
) -> tuple[Filtered, str]:
    parent = chain[0]
    child_tar = work / "rootfs.tar"
    stream = _filter_to_file(source, options, child_tar)
    delta = work / debformat.DELTA_PAYLOAD
    log.info("Making a delta against %s", parent.name)
    zstd = zstd_argv(options.level)
    with ExitStack() as stack:
        parent_stream = stack.enter_context(rootfs_stream(chain))
        out = stack.enter_context(delta.open("wb"))
        compressor = stack.enter_context(spawn(zstd, stdin=subprocess.PIPE, stdout=out))
        child = stack.enter_context(child_tar.open("rb"))
        size, digest = 0, ""
        try:
            size, digest = tardelta.write_delta(
                child.fileno(),
                parent_stream.stdout.fileno(),
                compressor.stdin.fileno(),
                digest=parent.metadata.format == 1,  # format 2: rootfs_stream checks it
            )
        except (BrokenPipeError, FormatError) as err:
            pipeline_failed(err, upstream=parent_stream, downstream=compressor)
        parent_stream.wait()
        compressor.stdin.close()
        compressor.wait()
    check_digest(parent, size, digest, chain[1:])
    estimate = _full_estimate(chain, stream.size)
    size = delta.stat().st_size
    if size > DELTA_WORTH * estimate:
        log.warning(
            "the delta against %s is %.1f MiB, more than half of the %.1f MiB a full "
            "payload is estimated at: packing a full template instead",
            parent.name,
            size / 2**20,
            estimate / 2**20,
        )
        _compress_file(child_tar, options, write)
        return stream, FULL
    log.info(
        "Delta against %s: %.1f MiB, %.1f %% of an estimated full payload of %.1f MiB",
        parent.name,
        size / 2**20,
        100 * size / max(estimate, 1),
        estimate / 2**20,
    )
    _copy_file(delta, write)
    return stream, DELTA


def _full_estimate(chain: list[Template], size: int) -> float:
    """What a full payload of a SIZE-byte tar would take, at the compression ratio of the
    full template at the bottom of the chain."""
    base = chain[-1]
    return size * base.payload.span.size / max(base.metadata.rootfs_size, 1)


def _filter_to_file(source: Path, options: PayloadOptions, path: Path) -> Filtered:
    """Write the filtered rootfs tar to PATH (the delta sends the members it inserts from it)."""
    with ExitStack() as stack:
        rootfs_tar = _open_source(source, options, stack)
        file = stack.enter_context(path.open("wb"))
        if rootfs_tar.direct:
            with spawn(rootfs_tar.argv, stdin=subprocess.PIPE, stdout=file) as tar:
                progress = Progress("Packing")
                rootfs_tar.feed(tar, progress)
                with _privilege_hint():
                    size = rootfs.tar_size(tar.wait())
                progress.close()
            return _walked_stream(source, rootfs_tar, size)
        read_fd, producer = rootfs_tar.start(stack)
        progress = Progress("Packing", rootfs_tar.total)
        reader = Reader(read_fd, "rootfs", progress=progress)
        try:
            try:
                stream = filter_tar(
                    reader,
                    Output(file.fileno()),
                    decide=_decide(rootfs_tar),
                    capture=rootfs.CAPTURED,
                )
            except OSError as err:
                raise os_error(err, f"cannot write {path}") from err
        except FormatError as err:
            with _privilege_hint():
                pipeline_failed(err, upstream=producer, downstream=None)
        progress.close()
        if producer is not None:
            with _privilege_hint():
                producer.wait()
    return stream


def _compress_file(
    path: Path, options: PayloadOptions, write: Callable[[memoryview], None]
) -> None:
    """zstd of a file on disk, streamed into write(). It reads the file as its stdin: the
    frames are then those of the streamed pack (no content size), the same bytes."""
    with path.open("rb") as source, spawn(zstd_argv(options.level), stdin=source) as compressor:
        drain = _Drain(compressor, write)
        try:
            drain.join()
            compressor.wait()
        finally:
            drain.stop()


def _copy_file(path: Path, write: Callable[[memoryview], None]) -> None:
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with path.open("rb") as f:
        while n := f.readinto(buf):
            write(view[:n])


class _Drain(threading.Thread):
    """Reads the compressor's output into the .deb while the main thread feeds it; after()
    runs after every piece (progress)."""

    def __init__(
        self,
        process: Process,
        write: Callable[[memoryview], None],
        after: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self._process = process
        self._write = write
        self._after = after
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        fd = self._process.stdout.fileno()
        try:
            while n := os.readv(fd, [buf]):
                self._write(view[:n])
                if self._after is not None:
                    self._after()
        except BaseException as err:  # reported by join() in the main thread
            self.error = err
            with contextlib.suppress(OSError):
                self._process.stdout.close()  # zstd now fails on its next write, and stops

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if isinstance(self.error, OSError):
            raise os_error(self.error, "cannot write the template") from self.error
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """On the way out, whatever happened: a thread still reading is stopped (its
        compressor killed) before the .deb it writes into is closed."""
        if self.is_alive():
            self._process.abort()
            super().join()


@dataclass
class _RootfsTar:
    """How the rootfs tar stream of a source is made: GNU tar over a tree (argv), or a
    tarball read as it is (argv empty); whether it needs the filter, and its rule. Direct:
    tar's stream is the payload's tar, and tar reads the list of entries from its stdin while
    the walk writes it (feed); otherwise the tree was walked before (walked)."""

    source: Path
    argv: list[str]
    selection: Selection
    direct: bool
    walked: rootfs.Walked | None = None
    covered: frozenset[bytes] = frozenset()  # the files to empty that stand-ins cover

    @property
    def total(self) -> int:
        """About the size of the stream (0: unknown, a tarball)."""
        return self.walked.size if self.walked is not None else 0

    def start(self, stack: ExitStack) -> tuple[int, Process | None]:
        """The readable fd of the stream, and the process producing it."""
        if self.argv:
            tar = stack.enter_context(spawn(self.argv))
            return tar.stdout.fileno(), tar
        return _read_tarball(self.source, stack)

    def feed(self, tar: Process, progress: Progress) -> None:
        """Walk the tree into tar's list of entries (its stdin), while tar packs them."""
        try:
            self.walked = rootfs.walk(self.source, self.selection, tar.stdin, rootfs.CAPTURED)
        except BrokenPipeError:
            return  # tar stopped reading: its exit status says why
        finally:
            with contextlib.suppress(OSError):
                tar.stdin.close()
        progress.expect(self.walked.size)
        changed = set(self.walked.emptied) - self.covered
        if changed:
            raise FormatError(
                f"{self.source}: {os.fsdecode(min(changed))} got content while it was packed; "
                "pack a root filesystem that nothing writes to"
            )


def _open_source(source: Path, options: PayloadOptions, stack: ExitStack) -> _RootfsTar:
    """How to make the rootfs tar stream of SOURCE. Package-owned paths that the excludes
    leave out are named in a warning at the end."""
    selection = options.excludes.select(_owned_paths(source, options))
    stack.push(lambda failed, *_: _report_lost(selection) if failed is None else None)
    if not source.is_dir():
        return _RootfsTar(source, [], selection, False)
    to_empty = selection.to_empty()
    if to_empty is not None:
        names = rootfs.with_content(source, to_empty)
        argv = rootfs.tar_create_argv(source, Path("-"), options.mtime)
        covered = _cover(source, names, argv, stack) if names else argv
        if covered is not None:
            return _RootfsTar(source, covered, selection, True, covered=frozenset(names))
    # the filter's way: the walk first, its list in a file
    listing = stack.enter_context(tempfile.NamedTemporaryFile(prefix="tmpl2deb-list-"))  # noqa: SIM115
    walked = rootfs.walk(source, selection, listing, rootfs.CAPTURED)
    listing.flush()
    log.debug("%d entries to pack from %s, about %d bytes", walked.entries, source, walked.size)
    argv = rootfs.tar_create_argv(source, Path(listing.name), options.mtime)
    return _RootfsTar(source, argv, selection, False, walked)


def _decide(rootfs_tar: _RootfsTar) -> Callable[[Member], Action]:
    """The filter's rule: a tarball's members are chosen as they come, a walked tree's only
    emptied."""
    selection = rootfs_tar.selection
    return selection.member if not rootfs_tar.argv else selection.emptied


def _cover(source: Path, names: list[bytes], argv: list[str], stack: ExitStack) -> list[str] | None:
    """tar's argv with the files to empty covered by empty stand-ins (root, in a mount
    namespace of its own); None where that cannot be done: the filter empties them then."""
    if os.geteuid() != 0 or not _mount_namespaces():
        return None
    directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tmpl2deb-empty-")))
    try:
        pairs = rootfs.make_stand_ins(source, names, directory)
    except OSError as err:
        log.debug("no stand-ins for the files to empty (%s): the filter empties them", err)
        return None
    log.debug("%d files to empty, covered by stand-ins", len(pairs))
    return rootfs.with_stand_ins(argv, pairs)


@functools.cache
def _mount_namespaces() -> bool:
    """Whether this process may make mount namespaces (not in every container)."""
    try:
        run(["unshare", "--mount", "--propagation=private", "true"])
    except CommandError:
        return False
    return True


def _read_tarball(source: Path, stack: ExitStack) -> tuple[int, Process | None]:
    """The readable fd of a rootfs tarball's tar stream, and its decompressor, if any."""
    argv = rootfs.decompress_argv(source)
    if argv is None:
        return stack.enter_context(source.open("rb")).fileno(), None
    decompressor = stack.enter_context(spawn(argv))
    return decompressor.stdout.fileno(), decompressor


def _owned_paths(source: Path, options: PayloadOptions) -> OwnedPaths:
    """What the rootfs' packages own, from dpkg's file lists (a tarball is read once more
    for them: its lists come after /dev, /run, /tmp and /var/cache in name order)."""
    if not options.excludes.patterns:
        return OwnedPaths()
    if source.is_dir():
        return read_owned(source)
    with ExitStack() as stack:
        read_fd, producer = _read_tarball(source, stack)
        try:
            lists = filter_tar(Reader(read_fd, "rootfs"), Output(None), capture=DpkgLists())
        except FormatError as err:
            pipeline_failed(err, upstream=producer, downstream=None)
        if producer is not None:
            producer.wait()
    return OwnedPaths.from_lists(lists.captured.values())


def _report_lost(selection: Selection) -> None:
    """A warning naming the package-owned paths the excludes left out (the stream is done)."""
    if selection.lost:
        names = ", ".join("/" + os.fsdecode(n) for n in sorted(selection.lost)[:10])
        log.warning(
            "the excludes leave out %d paths that packages of the rootfs own: %s%s "
            "(dpkg --verify will report them missing; '!PATTERN' keeps them)",
            len(selection.lost),
            names,
            ", ..." if len(selection.lost) > 10 else "",
        )


@contextmanager
def _privilege_hint() -> Iterator[None]:
    """tar failing on files it may not read becomes a PrivilegeError for non-root users."""
    try:
        yield
    except CommandError as err:
        if "Permission denied" in str(err) and os.geteuid() != 0:
            raise PrivilegeError(
                f"cannot read every file of the rootfs ({err}); pack as root (sudo)"
            ) from err
        raise
