"""The template .deb container: ar + control.tar + data.tar around a streamed rootfs payload."""

from __future__ import annotations

import io
import os
import posixpath
import struct
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import arpy

from tmpl2deb.errors import FormatError, os_error
from tmpl2deb.storedgzip import (
    GZIP_HEADER,
    GZIP_TRAILER,
    STORED_BLOCK,
    StoredGzipWriter,
    content_size,
    stored_gzip,
    stored_offset,
    stored_size,
)

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60
AR_MAX_SIZE = 10**10 - 1  # the ar size field has ten decimal digits
DEBIAN_BINARY = b"2.0\n"
BLOCK = 512

TEMPLATES_DIR = "usr/share/tmpl2deb/templates"
PAYLOAD = "rootfs.tar.zst"  # a full template: zstd of the rootfs tar
DELTA_PAYLOAD = "rootfs.tardelta.zst"  # a delta: zstd of a tar delta against the parent's tar
MANIFEST = "manifest"
METADATA = "metadata.json"


def template_dir(package: str) -> str:
    """Where a template's files live inside its package (and in a staging root)."""
    return f"{TEMPLATES_DIR}/{package}"


def ar_header(name: str, size: int, mtime: int) -> bytes:
    """One ar member header as dpkg-deb writes it (uid/gid 0, mode 100644)."""
    if size > AR_MAX_SIZE:
        raise FormatError(f"{name} is {size} bytes, more than a .deb member can hold")
    header = b"%-16s%-12d%-6d%-6d%-8o%-10d`\n" % (name.encode(), mtime, 0, 0, 0o100644, size)
    assert len(header) == AR_HEADER
    return header


def _tarinfo(name: str, mtime: int, *, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = size
    info.mtime = mtime
    info.uname = info.gname = "root"
    return info


def tar_header(name: str, mtime: int, *, size: int = 0, directory: bool = False) -> bytes:
    """GNU-format header block(s) for one member owned by root (as debputy's TarMember does)."""
    info = _tarinfo(name, mtime, size=size, directory=directory)
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


def tar_file(name: str, data: bytes, mtime: int) -> bytes:
    """A complete member: header, data, padding to the 512-byte block."""
    return tar_header(name, mtime, size=len(data)) + data + _padding(len(data))


def _padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


def control_tar(control: bytes, mtime: int, size: int = 0) -> bytes:
    """control.tar holding ./control, zero-padded to `size` (tar readers stop at the end marker)."""
    data = tar_header("./", mtime, directory=True) + tar_file("./control", control, mtime)
    data += bytes(2 * BLOCK)
    if size and len(data) > size:
        raise FormatError("control file grew beyond the space reserved for it")
    return data + bytes(max(0, size - len(data)))


def _directories(*paths: str) -> list[str]:
    """'./' and every directory on the way to each path, sorted, as tar member names."""
    names = {"./"}
    for path in paths:
        parts = path.split("/")
        names.update("./" + "/".join(parts[:depth]) + "/" for depth in range(1, len(parts) + 1))
    return sorted(names)


class DebWriter:
    """Writes a template .deb into a seekable file while the payload is streamed into it.

    Layout: debian-binary, control.tar.gz (space reserved up front and filled at the end,
    because the control fields hold the payload's digest), data.tar.gz. Both gzip members
    use stored blocks (see above): the payload is compressed once, by zstd, and written
    once; only headers are rewritten afterwards.
    """

    def __init__(self, out: BinaryIO, package: str, mtime: int, control_size: int) -> None:
        self._out = out
        self._dir = template_dir(package)
        self._mtime = mtime
        self._control_size = control_size  # length of control.tar, padded
        self._control_at = 0
        self._data_at = 0
        self._data: StoredGzipWriter | None = None
        self._header_segment = 0
        self._header_offset = 0
        self._payload_offset = 0

    @property
    def data(self) -> StoredGzipWriter:
        assert self._data is not None, "begin_payload() first"
        return self._data

    def begin_payload(self, docs: dict[str, bytes]) -> None:
        """Write everything up to the payload (docs go to /usr/share/doc/PACKAGE/)."""
        out = self._out
        out.write(AR_MAGIC + ar_header("debian-binary", len(DEBIAN_BINARY), self._mtime))
        out.write(DEBIAN_BINARY)
        control_member = stored_size(self._control_size)
        out.write(ar_header("control.tar.gz", control_member, self._mtime))
        self._control_at = out.tell()
        out.write(bytes(control_member) + b"\n" * (control_member % 2))
        self._data_at = out.tell()
        out.write(ar_header("data.tar.gz", 0, self._mtime))
        self._data = StoredGzipWriter(out)
        doc_dir = f"usr/share/doc/{self._dir.rpartition('/')[2]}"
        for directory in _directories(doc_dir, self._dir):
            self.data.write(tar_header(directory, self._mtime, directory=True))
            if directory == f"./{doc_dir}/":
                for name, data in sorted(docs.items()):
                    self.data.write(tar_file(f"./{doc_dir}/{name}", data, self._mtime))
        self._header_segment = self.data.split()
        self._header_offset = self.data.size
        self.data.write(tar_header(f"./{self._dir}/{PAYLOAD}", self._mtime))
        self.data.split()
        self._payload_offset = self.data.size

    def write_payload(self, chunk: bytes | memoryview) -> None:
        """Append payload bytes (the zstd stream)."""
        self.data.write(chunk)

    def end_payload(self) -> int:
        """Pad the payload to the tar block size and return its size."""
        size = self.data.size - self._payload_offset
        self.data.write(_padding(size))
        self.data.split()
        return size

    def add_file(self, name: str, data: bytes) -> None:
        """Add a small file after the payload."""
        self.data.write(tar_file(f"./{self._dir}/{name}", data, self._mtime))

    def finish(self, control: bytes, payload_size: int, payload_name: str = PAYLOAD) -> None:
        """Close data.tar, then fill in the control member and the sizes left open."""
        out = self._out
        self.data.write(bytes(2 * BLOCK))
        self.data.close()
        data_size = out.tell() - self._data_at - AR_HEADER
        if data_size % 2:
            out.write(b"\n")
        header = tar_header(f"./{self._dir}/{payload_name}", self._mtime, size=payload_size)
        self.data.patch(self._header_segment, self._header_offset, header)
        out.seek(self._control_at)
        out.write(stored_gzip(control_tar(control, self._mtime, self._control_size)))
        out.seek(self._data_at)
        out.write(ar_header("data.tar.gz", data_size, self._mtime))
        out.seek(0, os.SEEK_END)
        out.flush()


@dataclass(frozen=True, slots=True)
class Span:
    """A byte range: of a file, or of the content of a stored gzip member."""

    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class Region:
    """Bytes of a file: a plain span (member is None) or a span of a stored gzip member."""

    path: Path
    span: Span
    member: int | None = None  # file offset of the stored gzip member

    def pieces(self) -> Iterator[tuple[int, int]]:
        """(file offset, length) pieces holding the region's bytes, in order."""
        if self.member is None:
            yield self.span.offset, self.span.size
            return
        position, left = self.span.offset, self.span.size
        while left:
            length = min(left, STORED_BLOCK - position % STORED_BLOCK)
            yield self.member + stored_offset(position), length
            position += length
            left -= length

    def read(self) -> bytes:
        """All the bytes (for small regions)."""
        with self.path.open("rb") as f:
            return b"".join(_read_at(f, offset, length) for offset, length in self.pieces())


def _read_at(f: BinaryIO, offset: int, length: int) -> bytes:
    f.seek(offset)
    data = f.read(length)
    if len(data) != length:
        raise FormatError(f"{f.name} is truncated")
    return data


@dataclass(frozen=True, slots=True)
class DebLayout:
    """Where the parts of a template .deb are."""

    path: Path
    control: Region
    payload: Region
    manifest: Region
    metadata: Region
    payload_name: str = PAYLOAD
    package: str = ""  # the name of its template directory


def read_layout(path: Path) -> DebLayout:
    """Read and check the structure of a template .deb without reading its payload."""
    try:
        file_size = path.stat().st_size
        with path.open("rb") as f:
            members = _ar_members(f, path, file_size)
            control = _stored_member(f, path, members, "control.tar.gz")
            data = _stored_member(f, path, members, "data.tar.gz")
            files, dirs = _data_files(f, data, path)
    except OSError as err:
        raise os_error(err, f"cannot read {path}") from err
    return _layout(path, control, data, files, dirs)


def _ar_members(f: BinaryIO, path: Path, file_size: int) -> dict[str, Span]:
    if f.read(len(AR_MAGIC)) != AR_MAGIC:
        raise FormatError(f"{path} is not a Debian package (no ar archive signature)")
    f.seek(0)
    archive = arpy.Archive(fileobj=f)
    members: dict[str, Span] = {}
    names: list[str] = []
    try:
        for member in archive:
            header = member.header
            name = header.name.decode(errors="replace").rstrip("/")
            if header.file_offset + header.size > file_size:
                raise FormatError(f"{path} is truncated: member {name} runs past the end")
            names.append(name)
            members[name] = Span(header.file_offset, header.size)
    except arpy.ArchiveFormatError as err:
        raise FormatError(f"{path} is a corrupt ar archive: {err}") from err
    if names[:1] != ["debian-binary"] or len(names) < 3:
        raise FormatError(f"{path} is not a Debian package (members: {names})")
    f.seek(members["debian-binary"].offset)
    if not f.read(4).startswith(b"2."):
        raise FormatError(f"{path} has an unsupported debian-binary version")
    if names[1:3] != ["control.tar.gz", "data.tar.gz"]:
        raise FormatError(f"{path} is not a tmpl2deb template (members: {', '.join(names)})")
    return members


def _stored_member(f: BinaryIO, path: Path, members: dict[str, Span], name: str) -> Region:
    """Check a stored gzip member's header and trailer; return its content as a Region."""
    span = members[name]
    size = content_size(span.size)
    if _read_at(f, span.offset, len(GZIP_HEADER)) != GZIP_HEADER:
        raise FormatError(f"{path}: {name} is not a tmpl2deb stored gzip stream")
    trailer = _read_at(f, span.offset + span.size - GZIP_TRAILER, GZIP_TRAILER)
    if struct.unpack("<I", trailer[4:])[0] != size & 0xFFFFFFFF:
        raise FormatError(f"{path}: {name} has an inconsistent size (corrupt or truncated)")
    return Region(path, Span(0, size), span.offset)


class _Window(io.RawIOBase):
    """A read-only, seekable file object over a Region (for tarfile)."""

    def __init__(self, f: BinaryIO, region: Region) -> None:
        self._f = f
        self._region = region
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._region.span.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        left = self._region.span.size - self._pos
        size = max(0, min(len(buffer), left))
        if not size:
            return 0
        piece = Region(self._region.path, Span(self._pos, size), self._region.member)
        data = b"".join(_read_at(self._f, o, n) for o, n in piece.pieces())
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _data_files(f: BinaryIO, data: Region, path: Path) -> tuple[dict[str, Span], list[str]]:
    """The regular files of data.tar (where their data is), and every other member's name;
    anything but a directory or a regular file is refused by name."""
    files: dict[str, Span] = {}
    directories: list[str] = []
    try:
        with tarfile.open(fileobj=io.BufferedReader(_Window(f, data)), mode="r:") as tar:
            for info in tar:
                name = _member_name(path, info.name)
                if info.offset_data + info.size > data.span.size:
                    raise FormatError(f"{path} is truncated inside data.tar ({info.name})")
                if info.isfile():
                    files[name] = Span(info.offset_data, info.size)
                elif info.isdir():
                    directories.append(name)
                else:
                    raise FormatError(
                        f"{path} is not a tmpl2deb template: data.tar holds /{name}, which is "
                        "not a regular file or a directory"
                    )
    except tarfile.TarError as err:
        raise FormatError(f"{path} has a corrupt data.tar: {err}") from err
    return files, directories


def _member_name(path: Path, raw: str) -> str:
    """A data.tar member's path relative to /, refused if it is not in normal form."""
    name = raw.removeprefix("./").rstrip("/")
    if raw in (".", "./"):
        return ""
    if name != posixpath.normpath(name) or name.startswith(("/", "../")) or name == "..":
        raise FormatError(f"{path} is not a tmpl2deb template: data.tar member {raw!r}")
    return name


def _check_confined(
    path: Path, package_dir: str, files: Iterable[str], dirs: Iterable[str]
) -> None:
    """A template installs nothing but its template directory and its doc directory."""
    package = package_dir.rpartition("/")[2]
    homes = (package_dir, f"usr/share/doc/{package}")
    parents = {"", *(str(p) for h in homes for p in PurePosixPath(h).parents if str(p) != ".")}
    for name in (*files, *dirs):
        inside = any(name == h or name.startswith(h + "/") for h in homes)
        if not inside and not (name in parents and name not in files):
            raise FormatError(
                f"{path} is not a tmpl2deb template: it installs /{name}, outside "
                f"/{homes[0]} and /{homes[1]}"
            )


def _layout(
    path: Path, control: Region, data: Region, files: dict[str, Span], dirs: list[str]
) -> DebLayout:
    payloads = [name for name in files if name.endswith(("/" + PAYLOAD, "/" + DELTA_PAYLOAD))]
    if len(payloads) != 1 or not payloads[0].startswith(TEMPLATES_DIR + "/"):
        raise FormatError(
            f"{path} is not a tmpl2deb template: no single {TEMPLATES_DIR}/*/{PAYLOAD}"
        )
    package_dir, _, payload_name = payloads[0].rpartition("/")
    _check_confined(path, package_dir, files, dirs)
    for name in (MANIFEST, METADATA):
        if f"{package_dir}/{name}" not in files:
            raise FormatError(f"{path} is incomplete: {package_dir}/{name} is missing")

    def region(name: str) -> Region:
        return Region(path, files[f"{package_dir}/{name}"], data.member)

    return DebLayout(
        path=path,
        control=control,
        payload=region(payload_name),
        payload_name=payload_name,
        manifest=region(MANIFEST),
        metadata=region(METADATA),
        package=package_dir.rpartition("/")[2],
    )


# Maintainer scripts and the other control members dpkg acts on: a template has none of them.
SCRIPTS = ("preinst", "postinst", "prerm", "postrm", "config", "triggers")


def read_control(layout: DebLayout) -> bytes:
    """The ./control file from the control.tar.gz member, which must hold nothing else."""
    raw = layout.control.read()
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for info in tar:
                name = info.name.removeprefix("./").rstrip("/")
                if name in SCRIPTS:
                    raise FormatError(
                        f"{layout.path} is not a tmpl2deb template: it has a {name} "
                        "maintainer script (a template runs no code when installed)"
                    )
                if name not in ("", ".", "control") or (name == "control" and not info.isfile()):
                    raise FormatError(
                        f"{layout.path} is not a tmpl2deb template: control.tar holds {name}"
                    )
            member = tar.extractfile("./control")
            if member is None:
                raise FormatError(f"{layout.path}: control.tar has no regular ./control")
            return member.read()
    except (tarfile.TarError, KeyError) as err:
        raise FormatError(f"{layout.path}: unreadable control.tar ({err})") from err
