"""diff: what changed between two templates, from their manifests and their tar listings,
without unpacking either rootfs."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, fields

from tmpl2deb.pump import Reader
from tmpl2deb.rootfs import parse_manifest
from tmpl2deb.tarstream import REGULAR, Header, next_header, parse_number
from tmpl2deb.template import Template
from tmpl2deb.unpack import check_digest, rootfs_stream

_KINDS = {
    ord("0"): "file",
    ord("7"): "file",
    ord("1"): "hardlink",
    ord("2"): "symlink",
    ord("3"): "char device",
    ord("4"): "block device",
    ord("5"): "directory",
    ord("6"): "fifo",
}
_DEVICES = frozenset(b"34")


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
    entries: dict[str, Entry] = {}
    with rootfs_stream(chain) as process:
        reader = Reader(process.stdout.fileno(), "rootfs", digest=chain[0].metadata.format == 1)
        while (header := next_header(reader)) is not None:
            entries[_path(header.member.name)] = _entry(reader, header)
        for _ in reader.rest():
            pass
        process.wait()
    digest = reader.sha256.hexdigest() if reader.sha256 is not None else ""
    check_digest(chain[0], reader.offset, digest, chain[1:])
    return entries


def _path(name: bytes) -> str:
    return "/" + _text(name)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _entry(reader: Reader, header: Header) -> Entry:
    """The entry of a member whose headers were just read; its data is read too."""
    member, block, pax = header.member, header.block, header.pax
    content = ""
    if member.type in REGULAR:
        digest = hashlib.sha256()
        left = member.size
        for view in reader.chunks(header.padded):
            digest.update(view[:left])
            left -= min(left, len(view))
        content = digest.hexdigest()
    else:
        reader.skip(header.padded)

    def number(key: bytes, field: slice) -> int:
        return int(float(pax[key])) if key in pax else parse_number(block[field])

    extended = tuple(
        sorted(
            (_text(key), _text(value))
            for key, value in pax.items()
            if key.startswith((b"SCHILY.", b"RHT.")) and key != b"SCHILY.fflags"
        )
    )
    linked = member.type in (ord("1"), ord("2"))
    device = member.type in _DEVICES
    return Entry(
        kind=_KINDS.get(member.type, repr(chr(member.type))),
        mode=parse_number(block[100:108]),
        owner=f"{number(b'uid', slice(108, 116))}:{number(b'gid', slice(116, 124))}",
        size=member.size if member.type in REGULAR else 0,
        mtime=number(b"mtime", slice(136, 148)),
        link=_text(member.linkname) if linked else "",
        device=f"{parse_number(block[329:337])},{parse_number(block[337:345])}" if device else "",
        extended=extended,
        content=content,
    )
