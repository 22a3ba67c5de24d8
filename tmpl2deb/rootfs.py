"""Root filesystem trees and tarballs: the sorted walk, the GNU tar flags, what a tree holds."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import stat
from collections.abc import Container, Iterable
from pathlib import Path
from typing import IO, NamedTuple

from tmpl2deb.errors import FormatError, PrivilegeError, os_error
from tmpl2deb.excludes import DIRECTORY, Selection
from tmpl2deb.tarstream import BLOCK, REGULAR, Action, padded

# Flags GNU tar needs to keep everything a root filesystem holds, identical on both sides.
TAR_ATTR_FLAGS: tuple[str, ...] = (
    "--xattrs",
    "--xattrs-include=*",
    "--acls",
    "--selinux",
    "--numeric-owner",
)

# pax keeps nanosecond mtimes, long and non-UTF-8 names; dropping atime/ctime and the PID
# from extended header names makes the stream reproducible.
TAR_CREATE_FLAGS: tuple[str, ...] = (
    "--format=pax",
    "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
    *TAR_ATTR_FLAGS,
)

TARBALL_SUFFIXES = {".tar": None, ".zst": "zstd", ".gz": "gzip", ".xz": "xz"}

OS_RELEASE = (b"etc/os-release", b"usr/lib/os-release")
DPKG_STATUS = b"var/lib/dpkg/status"
CAPTURED = frozenset((*OS_RELEASE, DPKG_STATUS))


def tar_create_argv(root: Path, file_list: Path, mtime: int) -> list[str]:
    """GNU tar writing the entries named in file_list (NUL-separated, in order) to stdout;
    the size of the stream is the last line it writes to stderr (tar_size)."""
    return [
        "tar", "--create", "--file=-", f"--directory={root}",
        *TAR_CREATE_FLAGS,
        f"--mtime=@{mtime}", "--clamp-mtime", "--totals",
        "--no-recursion", "--null", "--verbatim-files-from", f"--files-from={file_list}",
    ]  # fmt: skip


_TOTALS = re.compile(r"^Total bytes written: (\d+)", re.MULTILINE)


def tar_size(stderr: str) -> int:
    """The size of the stream that tar --create --totals wrote, from its stderr."""
    found = _TOTALS.findall(stderr)
    if not found:
        raise FormatError("tar did not report the size of the rootfs stream (--totals)")
    return int(found[-1])


def tar_extract_argv(dest: Path) -> list[str]:
    """GNU tar extracting stdin into dest, restoring owners, modes, xattrs, ACLs, labels."""
    return [
        "tar", "--extract", "--file=-", f"--directory={dest}",
        *TAR_ATTR_FLAGS,
        "--same-owner", "--same-permissions", "--delay-directory-restore",
    ]  # fmt: skip


def decompress_argv(tarball: Path) -> list[str] | None:
    """The decompressor for a rootfs tarball by suffix; None for a plain .tar."""
    tool = TARBALL_SUFFIXES.get(tarball.suffix)
    if tarball.suffix != ".tar" and not tarball.name.endswith(f".tar{tarball.suffix}"):
        tool = None
    if tool is None and tarball.suffix != ".tar":
        raise FormatError(
            f"{tarball}: unknown rootfs archive type; use a directory or "
            ".tar, .tar.zst, .tar.gz or .tar.xz"
        )
    return None if tool is None else [tool, "--decompress", "--stdout", os.fspath(tarball)]


class Walked(NamedTuple):
    """What walk() listed: the entries, about the size of their tar, the regular files with
    content that the excludes empty, and which of the names asked for are listed regular
    files."""

    entries: int
    size: int
    emptied: list[bytes]
    found: list[bytes]


def walk(
    root: Path, selection: Selection, out: IO[bytes], look_for: Container[bytes] = ()
) -> Walked:
    """Write './name\\0' for every entry to pack, in GNU tar --sort=name order; return the count,
    about the size of the tar (a header per entry, the data of regular files: for the
    progress of pack), the files to empty and the names of LOOK_FOR found as regular files.

    Excluded directories are not descended into, and neither are other file systems
    (their mount point itself is kept), like tar --one-file-system. What is left out is
    noted in the selection (selection.lost: package-owned paths among it).
    """
    root_bytes = os.fsencode(root)
    try:
        device = os.lstat(root_bytes).st_dev
    except OSError as err:
        raise _read_error(root, err) from err

    def exists(name: bytes) -> bool:
        return os.path.lexists(root_bytes + b"/" + name)

    out.write(b".\0")
    count, size = 1, BLOCK
    emptied: list[bytes] = []
    found: list[bytes] = []
    # depth first, each directory's entries sorted by name: the order of tar --sort=name
    stack = [iter(_sorted_entries(root_bytes, b""))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        child, kind = entry
        action = selection.entry(child, kind)
        if action is Action.DROP:
            selection.dropped(child, kind == DIRECTORY, exists)
            continue
        out.write(b"./" + child + b"\0")
        count += 1
        size += BLOCK
        if kind in REGULAR:
            with contextlib.suppress(OSError):  # gone meanwhile: tar says so
                length = os.lstat(root_bytes + b"/" + child).st_size
                if action is Action.EMPTY and length:
                    emptied.append(child)
                else:
                    size += padded(length)
            if child in look_for:
                found.append(child)
        elif kind == DIRECTORY and os.lstat(root_bytes + b"/" + child).st_dev == device:
            stack.append(iter(_sorted_entries(root_bytes, child)))
    return Walked(count, size + 2 * BLOCK, emptied, found)


def with_content(root: Path, names: list[bytes]) -> list[bytes]:
    """Those of NAMES that are regular files with content in the tree at ROOT."""
    root_bytes = os.fsencode(root)
    found = []
    for name in names:
        with contextlib.suppress(OSError):
            info = os.lstat(root_bytes + b"/" + name)
            if stat.S_ISREG(info.st_mode) and info.st_size:
                found.append(name)
    return found


def make_stand_ins(root: Path, names: list[bytes], directory: Path) -> list[tuple[Path, Path]]:
    """For each regular file NAME of root, an empty file in DIRECTORY with its owner, mode,
    mtime and extended attributes (ACLs and capabilities among them): what GNU tar stores for
    it when it is covered by the stand-in (with_stand_ins). Pairs (stand-in, file); OSError
    when DIRECTORY's file system cannot hold an attribute."""
    pairs = []
    for number, name in enumerate(names):
        target = Path(os.fsdecode(os.fsencode(root.absolute()) + b"/" + name))
        info = os.lstat(target)
        stand_in = directory / str(number)
        fd = os.open(stand_in, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchown(fd, info.st_uid, info.st_gid)
            os.fchmod(fd, stat.S_IMODE(info.st_mode))  # after chown, which clears set-id bits
            for attribute in os.listxattr(target, follow_symlinks=False):
                os.setxattr(fd, attribute, os.getxattr(target, attribute, follow_symlinks=False))
            os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))
        finally:
            os.close(fd)
        pairs.append((stand_in, target))
    return pairs


# In a private mount namespace, each stand-in is bind-mounted over its file, then tar runs:
# the stream is GNU tar's own, names and extended header names included, and nothing outside
# the namespace sees the mounts (the tree is never changed).
_COVER = 'while [ "$1" != -- ]; do mount --bind -- "$1" "$2"; shift 2; done; shift; exec "$@"'


def with_stand_ins(argv: list[str], pairs: list[tuple[Path, Path]]) -> list[str]:
    """ARGV run where every file of PAIRS is covered by its stand-in (root only)."""
    covers = [os.fspath(p) for pair in pairs for p in pair]
    return ["unshare", "--mount", "--propagation=private", "--",
            "sh", "-ec", _COVER, "sh", *covers, "--", *argv]  # fmt: skip


def _sorted_entries(root: bytes, rel: bytes) -> list[tuple[bytes, int]]:
    """(relative name, tar member type) of the entries of root/rel, sorted by name."""
    path = root + b"/" + rel if rel else root
    prefix = rel + b"/" if rel else b""
    try:
        with os.scandir(path) as entries:
            found = [(prefix + e.name, _kind(e)) for e in entries]
    except OSError as err:
        raise _read_error(Path(os.fsdecode(path)), err) from err
    return sorted(found)


def _kind(entry: os.DirEntry[bytes]) -> int:
    """The tar member type of an entry: directory, regular file, symlink, or (as a
    character device) any other node."""
    if entry.is_dir(follow_symlinks=False):
        return DIRECTORY
    if entry.is_symlink():
        return ord("2")
    return ord("0") if entry.is_file(follow_symlinks=False) else ord("3")


def _read_error(path: Path, err: OSError) -> Exception:
    if isinstance(err, PermissionError) and os.geteuid() != 0:
        return PrivilegeError(
            f"cannot read {path}: permission denied; pack a root filesystem as root (sudo)"
        )
    return FormatError(f"cannot read rootfs {path}: {err.strerror}")


def check_tree(root: Path) -> None:
    """Raise unless root is a directory or an existing tarball we can read."""
    try:
        mode = root.stat().st_mode
    except OSError as err:
        raise os_error(err, f"cannot read rootfs {root}") from err
    if stat.S_ISREG(mode):
        decompress_argv(root)
    elif not stat.S_ISDIR(mode):
        raise FormatError(f"rootfs {root} is neither a directory nor a tarball")


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value pairs of an os-release file, with shell quoting removed."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            try:
                words = shlex.split(value)
            except ValueError:
                words = [value]
            values[key.strip()] = words[0] if words else ""
    return values


def installed_packages(status: bytes) -> list[tuple[str, str, str]]:
    """(name, version, architecture) of each installed package in a dpkg status file, sorted."""
    from debian.deb822 import Deb822  # imported late: it is slow to import

    packages = []
    for para in Deb822.iter_paragraphs(status.splitlines(keepends=True), use_apt_pkg=False):
        if para.get("Status", "").split()[-1:] == ["installed"]:
            packages.append((para["Package"], para["Version"], para.get("Architecture", "")))
    return sorted(packages)


def parse_manifest(manifest: bytes) -> list[tuple[str, str, str]]:
    """(name, version, architecture) per line of a manifest (render_manifest's output)."""
    lines = (line.split() for line in manifest.decode(errors="replace").splitlines())
    return [(parts[0], parts[1], parts[2]) for parts in lines if len(parts) == 3]


def render_manifest(packages: Iterable[tuple[str, str, str]]) -> bytes:
    """The manifest file: 'name version architecture' per line."""
    return "".join(f"{n} {v} {a}\n" for n, v, a in packages).encode()
