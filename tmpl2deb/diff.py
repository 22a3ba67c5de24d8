"""diff: what changed between two templates, from their manifests and their tar listings,
without unpacking either rootfs."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, fields

from tmpl2deb.errors import FormatError
from tmpl2deb.rootfs import parse_manifest
from tmpl2deb.template import Template
from tmpl2deb.unpack import check_digest, rootfs_stream

_KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.LNKTYPE: "hardlink",
    tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "char device",
    tarfile.BLKTYPE: "block device",
    tarfile.DIRTYPE: "directory",
    tarfile.FIFOTYPE: "fifo",
}


@dataclass(frozen=True, slots=True)
class Entry:
    """What the tar listing says about one path, with the sha256 of a file's content."""

    kind: str
    mode: int
    owner: str  # uid:gid
    size: int
    mtime: int
    link: str
    device: str
    extended: tuple[tuple[str, str], ...]  # xattrs, ACLs, SELinux label (pax records)
    content: str

    def changes(self, other: Entry) -> list[str]:
        """Names of the attributes that differ (a directory's mtime does not count)."""
        out = []
        for f in fields(self):
            if f.name == "mtime" and self.kind == other.kind == "directory":
                continue
            if getattr(self, f.name) != getattr(other, f.name):
                out.append({"extended": "xattrs"}.get(f.name, f.name))
        return out


@dataclass(frozen=True, slots=True)
class Diff:
    packages_added: list[str]
    packages_removed: list[str]
    packages_changed: list[str]
    files_added: list[str]
    files_removed: list[str]
    files_changed: list[tuple[str, list[str]]]


def packages(manifest: bytes) -> dict[tuple[str, str], str]:
    """(name, architecture) -> version, from a template manifest."""
    return {(name, arch): version for name, version, arch in parse_manifest(manifest)}


def diff(old: Sequence[Template], new: Sequence[Template], *, files: bool = True) -> Diff:
    """The difference between the templates at the top of two chains."""
    before, after = packages(old[0].manifest), packages(new[0].manifest)
    added = [f"{n} {after[n, a]} {a}" for n, a in sorted(after.keys() - before.keys())]
    removed = [f"{n} {before[n, a]} {a}" for n, a in sorted(before.keys() - after.keys())]
    changed = [
        f"{n} {before[n, a]} -> {after[n, a]} {a}"
        for n, a in sorted(before.keys() & after.keys())
        if before[n, a] != after[n, a]
    ]
    if not files:
        return Diff(added, removed, changed, [], [], [])
    was, now = listing(old), listing(new)
    return Diff(
        added,
        removed,
        changed,
        sorted(now.keys() - was.keys()),
        sorted(was.keys() - now.keys()),
        [
            (path, what)
            for path in sorted(was.keys() & now.keys())
            if was[path] != now[path] and (what := was[path].changes(now[path]))
        ],
    )


def listing(chain: Sequence[Template]) -> dict[str, Entry]:
    """Every path in the rootfs tar of chain[0], read as a stream and verified."""
    with rootfs_stream(chain) as process:
        reader = _HashingReader(process.stdout.fileno())
        entries = _entries(reader, chain[0])
        reader.drain()
        process.wait()
    check_digest(chain[0], reader.size, reader.sha256.hexdigest(), chain[1:])
    return entries


def _entries(reader: _HashingReader, template: Template) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    buffered = io.BufferedReader(reader, 1 << 20)
    try:
        with tarfile.open(
            fileobj=buffered, mode="r|", encoding="utf-8", errors="surrogateescape"
        ) as tar:
            for info in tar:
                entries[_path(info.name)] = _entry(tar, info)
    except tarfile.TarError as err:
        raise FormatError(f"{template.source}: unreadable rootfs tar ({err})") from err
    buffered.detach()
    return entries


def _path(name: str) -> str:
    name = name.removeprefix("./").rstrip("/")
    return "/" + name if name not in ("", ".") else "/"


def _entry(tar: tarfile.TarFile, info: tarfile.TarInfo) -> Entry:
    content = ""
    if info.isreg():
        digest = hashlib.sha256()
        member = tar.extractfile(info)
        assert member is not None
        while chunk := member.read(1 << 20):
            digest.update(chunk)
        content = digest.hexdigest()
    extended = tuple(
        sorted(
            (key, value)
            for key, value in info.pax_headers.items()
            if key.startswith(("SCHILY.", "RHT.")) and key != "SCHILY.fflags"
        )
    )
    return Entry(
        kind=_KINDS.get(info.type, repr(info.type)),
        mode=info.mode,
        owner=f"{info.uid}:{info.gid}",
        size=info.size if info.isreg() else 0,
        mtime=int(info.mtime),
        link=info.linkname if info.issym() or info.islnk() else "",
        device=f"{info.devmajor},{info.devminor}" if info.ischr() or info.isblk() else "",
        extended=extended,
        content=content,
    )


class _HashingReader(io.RawIOBase):
    """Reads a pipe, hashing and counting what passes (to verify the whole tar)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = os.readv(self._fd, [buffer])
        self.sha256.update(buffer[:n])
        self.size += n
        return n

    def drain(self) -> None:
        """Read what tarfile left after the end-of-archive marker."""
        buf = bytearray(1 << 20)
        while self.readinto(memoryview(buf)):
            pass
