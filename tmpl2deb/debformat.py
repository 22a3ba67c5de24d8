"""The template .deb container: ar + control.tar + data.tar around a streamed rootfs payload."""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import arpy

from tmpl2deb.errors import FormatError

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60
AR_MAX_SIZE = 10**10 - 1  # the ar size field has ten decimal digits
DEBIAN_BINARY = b"2.0\n"
BLOCK = 512

TEMPLATES_DIR = "usr/share/tmpl2deb/templates"
PAYLOAD = "rootfs.tar.zst"
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


class DebWriter:
    """Writes a template .deb into a seekable file while the payload is streamed into it.

    Layout: debian-binary, control.tar (space reserved up front and filled at the end,
    because the control fields hold the payload's digest), data.tar (uncompressed: its
    payload is already zstd). Only headers are rewritten afterwards; the payload is
    written once.
    """

    def __init__(self, out: BinaryIO, package: str, mtime: int, control_space: int) -> None:
        self._out = out
        self._dir = template_dir(package)
        self._mtime = mtime
        self._control_space = control_space
        self._control_at = 0
        self._data_at = 0
        self._payload_header_at = 0
        self._payload_header = b""
        self._payload_at = 0

    def begin_payload(self) -> None:
        """Write everything up to the payload; the caller then writes the payload at out's fd."""
        out = self._out
        out.write(AR_MAGIC + ar_header("debian-binary", len(DEBIAN_BINARY), self._mtime))
        out.write(DEBIAN_BINARY)
        out.write(ar_header("control.tar", self._control_space, self._mtime))
        self._control_at = out.tell()
        out.write(bytes(self._control_space))
        self._data_at = out.tell()
        out.write(ar_header("data.tar", 0, self._mtime))
        parts = self._dir.split("/")
        for depth in range(len(parts) + 1):
            name = "./" + "".join(p + "/" for p in parts[:depth])
            out.write(tar_header(name, self._mtime, directory=True))
        self._payload_header = tar_header(f"./{self._dir}/{PAYLOAD}", self._mtime)
        self._payload_header_at = out.tell()
        out.write(self._payload_header)
        out.flush()
        self._payload_at = out.tell()

    def end_payload(self) -> int:
        """Note where the payload ended (the fd's offset) and pad it; return its size."""
        end = os.lseek(self._out.fileno(), 0, os.SEEK_CUR)
        self._out.seek(end)
        size = end - self._payload_at
        self._out.write(_padding(size))
        name = f"./{self._dir}/{PAYLOAD}"
        header = tar_header(name, self._mtime, size=size)
        if len(header) != len(self._payload_header):
            raise FormatError("payload too large for a tar header")
        self._payload_header = header
        return size

    def add_file(self, name: str, data: bytes) -> None:
        """Add a small file next to the payload."""
        self._out.write(tar_file(f"./{self._dir}/{name}", data, self._mtime))

    def finish(self, control: bytes) -> None:
        """Close data.tar, then fill in the control member and the sizes left open."""
        out = self._out
        out.write(bytes(2 * BLOCK))
        end = out.tell()
        data_size = end - self._data_at - AR_HEADER
        if data_size % 2:
            out.write(b"\n")
        out.seek(self._control_at)
        out.write(control_tar(control, self._mtime, self._control_space))
        out.seek(self._data_at)
        out.write(ar_header("data.tar", data_size, self._mtime))
        out.seek(self._payload_header_at)
        out.write(self._payload_header)
        out.seek(0, os.SEEK_END)
        out.flush()


@dataclass(frozen=True, slots=True)
class Span:
    """A byte range of a file."""

    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class DebLayout:
    """Where the parts of a template .deb are."""

    path: Path
    control: Span
    data: Span
    payload: Span
    manifest: Span
    metadata: Span
    package_dir: str


def read_layout(path: Path) -> DebLayout:
    """Read and check the structure of a template .deb without reading its payload."""
    try:
        file_size = path.stat().st_size
        with path.open("rb") as f:
            members = _ar_members(f, path, file_size)
            control = members.get("control.tar")
            data = members.get("data.tar")
            if control is None or data is None:
                raise FormatError(
                    f"{path} is not a tmpl2deb template: it has {sorted(members)} "
                    "instead of an uncompressed control.tar and data.tar"
                )
            files = _data_files(f, data, path)
    except OSError as err:
        raise FormatError(f"cannot read {path}: {err.strerror}") from err
    return _layout(path, control, data, files)


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
    return members


class _Window(io.RawIOBase):
    """A read-only, seekable view of a byte range of a file (for tarfile)."""

    def __init__(self, f: BinaryIO, span: Span) -> None:
        self._f = f
        self._span = span
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._span.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        size = max(0, min(len(buffer), self._span.size - self._pos))
        self._f.seek(self._span.offset + self._pos)
        n = self._f.readinto(buffer[:size])  # type: ignore[attr-defined]
        self._pos += n
        return int(n)


def _data_files(f: BinaryIO, data: Span, path: Path) -> dict[str, Span]:
    files: dict[str, Span] = {}
    try:
        with tarfile.open(fileobj=io.BufferedReader(_Window(f, data)), mode="r:") as tar:
            for info in tar:
                if info.offset_data + info.size > data.size:
                    raise FormatError(f"{path} is truncated inside data.tar ({info.name})")
                if info.isfile():
                    files[info.name.removeprefix("./")] = Span(
                        data.offset + info.offset_data, info.size
                    )
    except tarfile.TarError as err:
        raise FormatError(f"{path} has a corrupt data.tar: {err}") from err
    return files


def _layout(path: Path, control: Span, data: Span, files: dict[str, Span]) -> DebLayout:
    payloads = [name for name in files if name.endswith("/" + PAYLOAD)]
    if len(payloads) != 1 or not payloads[0].startswith(TEMPLATES_DIR + "/"):
        raise FormatError(
            f"{path} is not a tmpl2deb template: no single {TEMPLATES_DIR}/*/{PAYLOAD}"
        )
    package_dir = payloads[0].rpartition("/")[0]
    for name in (MANIFEST, METADATA):
        if f"{package_dir}/{name}" not in files:
            raise FormatError(f"{path} is incomplete: {package_dir}/{name} is missing")
    return DebLayout(
        path=path,
        control=control,
        data=data,
        payload=files[f"{package_dir}/{PAYLOAD}"],
        manifest=files[f"{package_dir}/{MANIFEST}"],
        metadata=files[f"{package_dir}/{METADATA}"],
        package_dir=package_dir,
    )


def read_span(path: Path, span: Span) -> bytes:
    """The bytes of a (small) span of a file."""
    with path.open("rb") as f:
        f.seek(span.offset)
        return f.read(span.size)


def read_control(layout: DebLayout) -> bytes:
    """The ./control file from the control.tar member."""
    raw = read_span(layout.path, layout.control)
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            member = tar.extractfile("./control")
            if member is None:
                raise FormatError(f"{layout.path}: control.tar has no regular ./control")
            return member.read()
    except (tarfile.TarError, KeyError) as err:
        raise FormatError(f"{layout.path}: unreadable control.tar ({err})") from err
