"""The one tar reader: headers read and checked from a stream (next_header), for the filter
(drop or empty members, refuse unsafe ones, capture small files), the delta and diff."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Container
from enum import Enum
from typing import NamedTuple

from tmpl2deb.errors import FormatError, UnsafeArchiveError
from tmpl2deb.pump import Output, Reader

BLOCK = 512
_EXTENSION_LIMIT = 1 << 20  # pax/GNU long-name headers are small; refuse absurd ones
CAPTURE_LIMIT = 64 << 20  # largest member kept in memory (dpkg status of a big image: a few MB)

REGULAR = frozenset(b"07\0")
HARDLINK, SYMLINK = ord("1"), ord("2")
_MEMBER_TYPES = frozenset(b"01234567\0")
_EXTENSIONS = frozenset(b"xgLK")
_GLOBAL = ord("g")
# what a pax global header (git archive, Python's tarfile) may not set for every member: the
# checks below look at each member's own name, link and size
_NOT_GLOBAL = (b"path", b"linkpath", b"size")
_ZERO = bytes(BLOCK)


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


def padded(size: int) -> int:
    """SIZE bytes of member data as stored: rounded up to whole blocks."""
    return -(-size // BLOCK) * BLOCK


def normalize(name: bytes) -> bytes:
    """'./etc/hosts' and 'etc/hosts/' become 'etc/hosts'; the root is b''."""
    while name.startswith(b"./"):
        name = name[2:]
    name = name.rstrip(b"/")
    return b"" if name == b"." else name


def parse_number(field: bytes) -> int:
    """A tar numeric field: octal digits between spaces, ended by NUL or space (as GNU tar
    reads them: no sign, no underscores, where Python's int() would take them), or GNU
    base-256 when the high bit is set."""
    if field and field[0] & 0x80:
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        if text and not text.isdigit():
            raise ValueError(text)
        return int(text, 8) if text else 0
    except ValueError as err:
        raise FormatError(f"tar header has a bad number field {field!r}") from err


def checksum(header: bytes | bytearray) -> int:
    """The ustar header checksum, with the checksum field itself counted as spaces. The byte
    sum is adler32's first half: exact for 256 bytes (at most 65280, below its modulus),
    and four times faster than sum()."""
    low = zlib.adler32(header[:256], 0) & 0xFFFF
    high = zlib.adler32(header[256:BLOCK], 0) & 0xFFFF
    return low + high - sum(header[148:156]) + 8 * 32


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
        # the directory of the last path checked, against the symlinks known then: the next
        # members (sorted archives: most of them) are in the same one. A symlink added since
        # cannot be on its way: the link's own check left its parent here, never longer.
        self._checked_dir: bytes | None = None

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
        directory = name.rpartition(b"/")[0]
        if directory == self._checked_dir:
            return
        self._check_directories(name, what)
        self._checked_dir = directory

    def _check_directories(self, name: bytes, what: str) -> None:
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


class Header(NamedTuple):
    """One member's headers as read: what the checks and decisions see (member), the raw bytes
    (pax global headers before it, its own extension headers, its ustar header), and where its
    data is."""

    member: Member
    raw: bytes  # every header block read for it, data of the extension headers included
    globals: int  # raw[:globals] are pax global headers: they belong to every later member
    pax: dict[bytes, bytes]  # its own pax records
    offset: int  # where its first header starts in the stream
    padded: int  # its data with the padding to a whole block

    @property
    def block(self) -> bytes:
        """The ustar header itself."""
        return self.raw[-BLOCK:]


def next_header(reader: Reader) -> Header | None:
    """The headers of the next member, checked (checksum, header kinds, sizes of extension
    headers, what a global header may set); None at the end-of-archive block, which is read
    (reader.offset is then just past it)."""
    start = reader.offset
    found = _read_block(reader, pending=False)
    if found is None:
        return None
    block, kind, size = found
    if kind in _MEMBER_TYPES:  # most members: a ustar header alone
        name = normalize(member_name(block, _NO_PAX, None))
        member = Member(name, kind, _cstr(block[157:257]), size)
        return Header(member, block, 0, _NO_PAX, start, padded(size))
    return _extended(reader, start, found)


_NO_PAX: dict[bytes, bytes] = {}


def _extended(reader: Reader, start: int, found: tuple[bytes, int, int]) -> Header:
    """The member whose first header, FOUND, is an extension header (pax, GNU long names)."""
    raw = bytearray()
    globals_end = 0
    pax: dict[bytes, bytes] = {}
    names: dict[int, bytes] = {}  # GNU long name (L) and long link (K)
    while True:
        block, kind, size = found
        raw += block
        if kind not in _EXTENSIONS:
            if kind not in _MEMBER_TYPES:
                raise FormatError(f"tar archive has an unsupported member type {chr(kind)!r}")
            linkname = pax.get(b"linkpath", names.get(ord("K")) or _cstr(block[157:257]))
            size = _pax_size(pax, size)
            name = normalize(member_name(block, pax, names.get(ord("L"))))
            member = Member(name, kind, linkname, size)
            return Header(member, bytes(raw), globals_end, pax, start, padded(size))
        if size > _EXTENSION_LIMIT:
            raise FormatError("tar archive has an oversized extension header")
        data = reader.read(padded(size))
        raw += data
        payload = data[:size]
        if kind == _GLOBAL:
            _check_global(payload)
            globals_end = len(raw)
        elif kind == ord("x"):
            pax.update(parse_pax(payload))
        else:
            names[kind] = payload.rstrip(b"\0")
        following = _read_block(reader, pending=True)
        assert following is not None  # pending: the end-of-archive block raised
        found = following


def _pax_size(pax: dict[bytes, bytes], size: int) -> int:
    """The size a pax header gives (decimal digits only, as GNU tar reads it)."""
    if b"size" not in pax:
        return size
    text = pax[b"size"]
    if not text.isdigit():
        raise FormatError(f"tar archive has a bad pax size {text!r}")
    return int(text)


def _read_block(reader: Reader, pending: bool) -> tuple[bytes, int, int] | None:
    """The next header block, its kind and size field; None at the end-of-archive block."""
    block = reader.read(BLOCK)
    if block == _ZERO:
        if pending:
            raise FormatError(f"the {reader.side} tar has an extension header without member")
        return None
    stored = parse_number(block[148:156])
    if stored != checksum(block) and stored != _signed_checksum(block):
        raise FormatError("tar archive has a header with a bad checksum (corrupt payload?)")
    return block, block[156] or ord("0"), parse_number(block[124:136])


def _check_global(payload: bytes) -> None:
    keys = parse_pax(payload).keys() & set(_NOT_GLOBAL)
    if keys:
        raise UnsafeArchiveError(
            "tar archive has a pax global header that sets "
            f"{', '.join(sorted(k.decode() for k in keys))} for every member"
        )


class Filtered(NamedTuple):
    """What filter_tar wrote: its size, sha256 (with digest, else None), the members kept,
    and the captured files."""

    size: int
    sha256: str | None
    members: int
    captured: dict[bytes, bytes]


def filter_tar(
    reader: Reader,
    out: Output,
    *,
    decide: Callable[[Member], Action] | None = None,
    check: Callable[[Member], None] | None = None,
    capture: Container[bytes] = frozenset(),
) -> Filtered:
    """Copy the tar stream of reader to out, member by member: check(member) may raise to
    refuse one before any of its bytes are written, decide(member) picks KEEP, DROP or EMPTY
    (default KEEP). The data of members kept whole moves in the kernel where it can
    (Reader.move). Members whose names are in capture are also kept in memory (small files)."""
    captured: dict[bytes, bytes] = {}
    members = 0
    while (header := next_header(reader)) is not None:
        member = header.member
        if check is not None:
            check(member)
        action = decide(member) if decide is not None else Action.KEEP
        if action is Action.DROP:
            out.write(header.raw[: header.globals])
        elif action is Action.EMPTY and member.type in REGULAR and member.size:
            if b"size" in header.pax:
                raise FormatError(f"cannot empty {_show(member.name)}: its size is in a pax header")
            out.write(header.raw[:-BLOCK] + with_size(header.block, 0))
        else:
            out.write(header.raw)
        members += action is not Action.DROP
        if member.name in capture and member.type in REGULAR and header.padded:
            data = bytearray()
            for view in reader.chunks(header.padded):
                if action is Action.KEEP:
                    out.write(view)
                data += view[: max(0, min(member.size, CAPTURE_LIMIT) - len(data))]
            captured[member.name] = bytes(data)
        elif action is Action.KEEP:
            reader.move(header.padded, out)
        else:
            reader.skip(header.padded)
    _end(reader, out)
    digest = out.sha256.hexdigest() if out.sha256 is not None else None
    return Filtered(out.size, digest, members, captured)


def _end(reader: Reader, out: Output) -> None:
    """The end-of-archive block and whatever follows it (zeros to a whole tar record) go out
    as they are. The consumer may stop reading at the end-of-archive marker (GNU tar does):
    its exit status tells whether it got the content, so a broken pipe here is not an error;
    the input is read to its end all the same."""
    try:
        out.write(_ZERO)
        for view in reader.rest():
            out.write(view)
        out.flush()
    except BrokenPipeError:
        for _ in reader.rest():
            pass


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
