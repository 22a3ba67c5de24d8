"""A streaming walk over tar headers: hash and count, drop or empty members, refuse unsafe ones."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Container
from enum import Enum
from typing import NamedTuple

from tmpl2deb.errors import FormatError, UnsafeArchiveError

BLOCK = 512
_EXTENSION_LIMIT = 1 << 20  # pax/GNU long-name headers are small; refuse absurd ones
_CAPTURE_LIMIT = 64 << 20  # largest member kept in memory (dpkg status of a big image: a few MB)

REGULAR = frozenset(b"07\0")
HARDLINK, SYMLINK = ord("1"), ord("2")
_MEMBER_TYPES = frozenset(b"01234567\0")
_EXTENSIONS = frozenset(b"xgLK")
_GLOBAL = ord("g")
# what a pax global header (git archive, Python's tarfile) may not set for every member: the
# checks below look at each member's own name, link and size
_NOT_GLOBAL = (b"path", b"linkpath", b"size")


class Action(Enum):
    """What the filter does with one member."""

    KEEP = "keep"
    DROP = "drop"
    EMPTY = "empty"  # keep the entry and its metadata, drop the file contents


class Member(NamedTuple):
    """One archive member as GNU tar will see it (names relative, without './'); a tuple: one
    is made for every header of a rootfs."""

    name: bytes
    type: int
    linkname: bytes
    size: int


def normalize(name: bytes) -> bytes:
    """'./etc/hosts' and 'etc/hosts/' become 'etc/hosts'; the root is b''."""
    while name.startswith(b"./"):
        name = name[2:]
    name = name.rstrip(b"/")
    return b"" if name == b"." else name


def parse_number(field: bytes) -> int:
    """A tar numeric field: octal text, or GNU base-256 when the high bit is set."""
    if field and field[0] & 0x80:
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError as err:
        raise FormatError(f"tar header has a bad number field {field!r}") from err


def checksum(header: bytes | bytearray) -> int:
    """The ustar header checksum, with the checksum field itself counted as spaces."""
    return sum(header[:BLOCK]) - sum(header[148:156]) + 8 * 32


def with_size(header: bytes, size: int) -> bytes:
    """A copy of a 512-byte header with a new size and a recomputed checksum."""
    block = bytearray(header)
    block[124:136] = b"%011o\0" % size
    block[148:156] = b"%06o\0 " % checksum(block)
    return bytes(block)


def _signed_checksum(header: bytes) -> int:
    """Some old tars summed signed bytes; GNU tar accepts both, and so do we."""
    return sum(b - 256 if b > 127 else b for b in header[:148] + header[156:BLOCK]) + 8 * 32


def parse_pax(data: bytes) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError as err:
            raise FormatError("tar archive has a malformed pax header") from err
        if length <= 0:
            raise FormatError("tar archive has a malformed pax header")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key] = value
        pos += length
    return records


class SafetyCheck:
    """Refuses members that would land outside the extraction directory."""

    def __init__(self) -> None:
        self._symlinks: set[bytes] = set()
        self._seen: set[bytes] = set()

    def __call__(self, member: Member) -> None:
        name = member.name
        self._check_path(name, "path")
        if member.type == HARDLINK:
            target = normalize(member.linkname)
            self._check_path(target, "hard link target")
            if target not in self._seen or target in self._symlinks:
                raise UnsafeArchiveError(
                    f"member {_show(name)} is a hard link to {_show(target)}, "
                    "which is not an earlier regular member of the archive"
                )
        if name in self._symlinks:
            raise UnsafeArchiveError(f"member {_show(name)} replaces an earlier symlink")
        self._seen.add(name)
        if member.type == SYMLINK:
            self._symlinks.add(name)

    def _check_path(self, name: bytes, what: str) -> None:
        if name.startswith(b"/"):
            raise UnsafeArchiveError(f"member {what} {_show(name)} is absolute")
        if b".." in name and b".." in name.split(b"/"):
            raise UnsafeArchiveError(f"member {what} {_show(name)} contains '..'")
        symlinks = self._symlinks
        slash = name.find(b"/")
        while slash > 0:  # every directory on the way: name[:slash]
            if name[:slash] in symlinks:
                raise UnsafeArchiveError(
                    f"member {what} {_show(name)} goes through the symlink "
                    f"{_show(name[:slash])}"
                )
            slash = name.find(b"/", slash + 1)


def _show(name: bytes) -> str:
    return repr(name.decode(errors="backslashreplace"))


class TarFilter:
    """Feed tar bytes in chunks; the (possibly filtered) stream goes to write().

    decide(member) picks KEEP/DROP/EMPTY (default KEEP); check(member) may raise to refuse
    a member before any of its bytes are written. The size, and with digest the sha256, cover
    the output. Members whose names are in `capture` are also kept in memory (small files only).
    """

    def __init__(
        self,
        write: Callable[[bytes | memoryview], object],
        *,
        decide: Callable[[Member], Action] | None = None,
        check: Callable[[Member], None] | None = None,
        capture: Container[bytes] = frozenset(),
        digest: bool = True,
    ) -> None:
        self._write = write
        self._decide = decide
        self._check = check
        self._capture_names = capture
        self.captured: dict[bytes, bytes] = {}
        self.sha256 = hashlib.sha256()
        self._digest = digest
        self.size = 0
        self.members = 0
        self._chunk = memoryview(b"")
        self._runs: list[tuple[int, int] | bytes] = []  # output of the current chunk
        self._pending = bytearray()  # bytes of a header or extension not complete yet
        self._ext = bytearray()  # extension headers waiting for their member
        self._pax: dict[bytes, bytes] = {}
        self._longname: bytes | None = None
        self._longlink: bytes | None = None
        self._need = BLOCK  # bytes wanted for the current header/extension block
        self._ext_type = 0
        self._ext_size = 0
        self._data_left = 0  # padded bytes of member data still to pass or skip
        self._data_pass = True
        self._capture: bytearray | None = None
        self._capture_name = b""
        self._capture_left = 0
        self._ended = False

    @property
    def ended(self) -> bool:
        """The end-of-archive marker has been seen (what follows is padding)."""
        return self._ended

    # -- output: runs of the input chunk, or replacement bytes, written once per chunk --
    def _keep(self, start: int, end: int) -> None:
        runs = self._runs
        if runs and isinstance(runs[-1], tuple) and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))

    def _emit(self, data: bytes, start: int | None) -> None:
        """Output data, which sits at chunk[start:] (in place) or nowhere (start is None)."""
        if start is None:
            if data:
                self._runs.append(bytes(data))
        else:
            self._keep(start, start + len(data))

    def _write_runs(self) -> None:
        parts = [self._chunk[r[0] : r[1]] if isinstance(r, tuple) else r for r in self._runs]
        self._runs = []
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if data:
            if self._digest:
                self.sha256.update(data)
            self.size += len(data)
            self._write(data)

    # -- input --------------------------------------------------------------------------
    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Process the next chunk of the input stream."""
        view = self._chunk = memoryview(chunk)
        pos, end = 0, len(view)
        while pos < end:
            if self._ended:
                self._keep(pos, end)
                break
            if self._data_left:
                pos = self._pass_data(pos, end)
                continue
            need = self._need
            if not self._pending and end - pos >= need:
                self._block(bytes(view[pos : pos + need]), pos)
                pos += need
                continue
            take = min(need - len(self._pending), end - pos)
            self._pending += view[pos : pos + take]
            pos += take
            if len(self._pending) == need:
                block = bytes(self._pending)
                self._pending.clear()
                self._block(block, None)
        if self._runs:
            self._write_runs()

    def _pass_data(self, pos: int, end: int) -> int:
        take = min(self._data_left, end - pos)
        if self._data_pass:
            self._keep(pos, pos + take)
        if self._capture is not None:
            keep = min(self._capture_left, take)
            self._capture += self._chunk[pos : pos + keep]
            self._capture_left -= keep
        self._data_left -= take
        if not self._data_left and self._capture is not None:
            self.captured[self._capture_name] = bytes(self._capture)
            self._capture = None
        return pos + take

    def passthrough(self) -> int:
        """Bytes of member data next in the input that go to the output as they are, unseen
        (no digest, nothing captured): pump() may move them itself (splice), then passed()."""
        if self._ended or not self._data_pass or self._digest or self._capture is not None:
            return 0
        return self._data_left

    def passed(self, n: int) -> None:
        """n bytes of passthrough() went from the input to the output without feed()."""
        self._data_left -= n
        self.size += n

    def finish(self) -> None:
        """Check the stream ended cleanly."""
        if not self._ended or self._data_left or self._pending:
            raise FormatError("tar archive is truncated (no end-of-archive marker)")

    # -- headers ------------------------------------------------------------------------
    def _block(self, block: bytes, start: int | None) -> None:
        if self._ext_type:
            self._extension_data(block, start)
            return
        if block.count(0) == BLOCK:
            self._ended = True
            self._emit(self._ext, None)  # nothing pending in a well-formed archive
            self._emit(block, start)
            return
        stored = parse_number(block[148:156])
        if stored != checksum(block) and stored != _signed_checksum(block):
            raise FormatError("tar archive has a header with a bad checksum (corrupt payload?)")
        kind = block[156] or ord("0")
        size = parse_number(block[124:136])
        if kind in _EXTENSIONS:
            if size > _EXTENSION_LIMIT:
                raise FormatError("tar archive has an oversized extension header")
            self._hold(block, start, kind)
            self._ext_type = kind
            self._need = max(BLOCK, -(-size // BLOCK) * BLOCK)
            self._ext_size = size
            if size == 0:
                self._extension_data(b"", None)
            return
        self._member(block, start, kind, size)

    def _hold(self, data: bytes, start: int | None, kind: int) -> None:
        """Extension headers wait for their member's decision, unless nothing can drop it (or
        it is a global header: it belongs to every member after it)."""
        if self._decide is None or kind == _GLOBAL:
            self._emit(data, start)
        else:
            self._ext += data

    def _extension_data(self, data: bytes, start: int | None) -> None:
        self._hold(data, start, self._ext_type)
        payload = data[: self._ext_size]
        if self._ext_type == _GLOBAL:
            keys = parse_pax(payload).keys() & set(_NOT_GLOBAL)
            if keys:
                raise UnsafeArchiveError(
                    "tar archive has a pax global header that sets "
                    f"{', '.join(sorted(k.decode() for k in keys))} for every member"
                )
        elif self._ext_type == ord("x"):
            self._pax.update(parse_pax(payload))
        elif self._ext_type == ord("L"):
            self._longname = payload.rstrip(b"\0")
        else:
            self._longlink = payload.rstrip(b"\0")
        self._ext_type = 0
        self._need = BLOCK

    def _member(self, block: bytes, start: int | None, kind: int, size: int) -> None:
        if kind not in _MEMBER_TYPES:
            raise FormatError(f"tar archive has an unsupported member type {chr(kind)!r}")
        member = self._make_member(block, kind, size)
        if self._check is not None:
            self._check(member)
        action = self._decide(member) if self._decide else Action.KEEP
        padded = -(-member.size // BLOCK) * BLOCK
        if action is Action.EMPTY and kind in REGULAR and member.size:
            if b"size" in self._pax:
                raise FormatError(f"cannot empty {_show(member.name)}: its size is in a pax header")
            block, start = with_size(block, 0), None
        if action is not Action.DROP:
            self.members += 1
            if self._ext:
                self._emit(self._ext, None)
            self._emit(block, start)
        self._data_pass = action is Action.KEEP
        self._data_left = padded
        if member.name in self._capture_names and kind in REGULAR and padded:
            self._capture = bytearray()
            self._capture_name = member.name
            self._capture_left = min(member.size, _CAPTURE_LIMIT)
        if self._ext:
            self._ext = bytearray()
        if self._pax:
            self._pax = {}
        self._longname = self._longlink = None

    def _make_member(self, block: bytes, kind: int, size: int) -> Member:
        pax = self._pax
        if pax:
            linkname = pax.get(b"linkpath", self._longlink or _cstr(block[157:257]))
            size = int(pax.get(b"size", size))
        else:
            linkname = self._longlink or _cstr(block[157:257])
        return Member(normalize(member_name(block, pax, self._longname)), kind, linkname, size)


def member_name(block: bytes, pax: dict[bytes, bytes], longname: bytes | None) -> bytes:
    """A member's name: from its pax header, else its GNU long name, else the header's
    ustar prefix and name."""
    if b"path" in pax:
        return pax[b"path"]
    if longname is not None:
        return longname
    name = _cstr(block[0:100])
    if block[257:263] == b"ustar\0":
        prefix = _cstr(block[345:500])
        if prefix:
            name = prefix + b"/" + name
    return name


def _cstr(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


def writer(fd: int) -> Callable[[bytes | memoryview], None]:
    """A write function that writes everything to fd (os.write may write less)."""

    def write(data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    return write
