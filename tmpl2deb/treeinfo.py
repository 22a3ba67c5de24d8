"""Describe a directory tree's entries and metadata so that two trees can be compared exactly."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

Entry = tuple[object, ...]


def describe(root: Path) -> dict[bytes, Entry]:
    """path -> (type, mode, uid, gid, mtime_ns, size, content, xattrs, hardlink group).

    Paths are bytes (names need not be UTF-8), hence os.path rather than pathlib here.
    """
    entries: dict[bytes, Entry] = {}
    inodes: dict[tuple[int, int], bytes] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)  # noqa: PTH118
            rel = os.path.relpath(path, base)
            entries[rel] = _entry(path, rel, inodes)
    entries[b"."] = _entry(base, b".", {})
    return entries


def _entry(path: bytes, rel: bytes, inodes: dict[tuple[int, int], bytes]) -> Entry:
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    group = b""
    if kind == stat.S_IFREG and st.st_nlink > 1:
        group = inodes.setdefault((st.st_dev, st.st_ino), rel)
    content: object = ""
    if kind == stat.S_IFREG:
        content = hashlib.sha256(Path(os.fsdecode(path)).read_bytes()).hexdigest()
    elif kind == stat.S_IFLNK:
        content = os.readlink(path)  # noqa: PTH115
    elif kind in (stat.S_IFCHR, stat.S_IFBLK):
        content = (os.major(st.st_rdev), os.minor(st.st_rdev))
    mtime = st.st_mtime_ns
    size = st.st_size if kind == stat.S_IFREG else 0
    return (
        kind,
        stat.S_IMODE(st.st_mode),
        st.st_uid,
        st.st_gid,
        mtime,
        size,
        content,
        _xattrs(path),
        group,
    )


def _xattrs(path: bytes) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names))


def changed(
    a: dict[bytes, Entry], b: dict[bytes, Entry], *, ignore_mtime: bool = False
) -> list[bytes]:
    """Paths in both descriptions whose entries differ (mtimes left out if ignore_mtime)."""

    def key(entry: Entry) -> Entry:
        return entry[:4] + entry[5:] if ignore_mtime else entry

    return sorted(k for k in a.keys() & b.keys() if key(a[k]) != key(b[k]))


def differences(a: dict[bytes, Entry], b: dict[bytes, Entry]) -> list[str]:
    """Human-readable differences between two descriptions."""
    out = [f"only in first: {k!r}" for k in sorted(a.keys() - b.keys())]
    out += [f"only in second: {k!r}" for k in sorted(b.keys() - a.keys())]
    out += [f"{k!r}: {a[k]} != {b[k]}" for k in changed(a, b)]
    return out
