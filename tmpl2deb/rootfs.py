"""Root filesystem trees and tarballs: the sorted walk, the GNU tar flags, what a tree holds."""

from __future__ import annotations

import contextlib
import os
import shlex
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

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
    """GNU tar writing the entries named in file_list (NUL-separated, in order) to stdout."""
    return [
        "tar", "--create", "--file=-", f"--directory={root}",
        *TAR_CREATE_FLAGS,
        f"--mtime=@{mtime}", "--clamp-mtime",
        "--no-recursion", "--null", "--verbatim-files-from", f"--files-from={file_list}",
    ]  # fmt: skip


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


def walk(root: Path, selection: Selection, out: BinaryIO) -> tuple[int, int]:
    """Write './name\\0' for every entry to pack, in GNU tar --sort=name order; return the count
    and about the size of the tar (a header per entry, the data of regular files: for the
    progress of pack).

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
    count = 1
    size = BLOCK
    # depth first, each directory's entries sorted by name: the order of tar --sort=name
    stack = [iter(_sorted_entries(root_bytes, b""))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        child, kind = entry
        if selection.entry(child, kind) is Action.DROP:
            selection.dropped(child, kind == DIRECTORY, exists)
            continue
        out.write(b"./" + child + b"\0")
        count += 1
        size += BLOCK
        if kind in REGULAR:
            with contextlib.suppress(OSError):  # gone meanwhile: tar says so
                size += padded(os.lstat(root_bytes + b"/" + child).st_size)
        elif kind == DIRECTORY and os.lstat(root_bytes + b"/" + child).st_dev == device:
            stack.append(iter(_sorted_entries(root_bytes, child)))
    return count, size + 2 * BLOCK


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
