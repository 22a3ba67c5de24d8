"""Root filesystem trees and tarballs: exclude rules, the sorted file walk and the GNU tar flags."""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import translate
from pathlib import Path
from typing import BinaryIO

from tmpl2deb.errors import FormatError, MetadataError, PrivilegeError
from tmpl2deb.tarstream import Action, Member

# Host leaks a template must not carry. "/x/*" drops what is below /x but keeps /x itself;
# "!" re-includes; "=" keeps the entry with its metadata and empties its contents.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    "/etc/apt/sources.list",
    "/etc/apt/sources.list.d/*",
    "/etc/apt/apt.conf",
    "/etc/apt/apt.conf.d/*proxy*",
    "/etc/resolv.conf",
    "/etc/hosts",
    "=/etc/machine-id",
    "/var/lib/apt/lists/*",
    "/var/cache/apt/*",
    "/var/log/*",
    "/tmp/*",
    "/var/tmp/*",
    "/proc/*",
    "/sys/*",
    "/run/*",
    "/dev/*",
    # the static nodes and links mmdebstrap and debootstrap create in /dev
    *(
        f"!/dev/{name}"
        for name in (
            "console",
            "full",
            "null",
            "ptmx",
            "random",
            "tty",
            "urandom",
            "zero",
            "fd",
            "stdin",
            "stdout",
            "stderr",
            "pts",
            "shm",
        )
    ),  # fmt: skip
)

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


@dataclass(frozen=True, slots=True)
class ExcludeRules:
    """Ordered exclude patterns; the last pattern that matches an entry decides."""

    patterns: tuple[str, ...]

    def __post_init__(self) -> None:
        for pattern in self.patterns:
            if "\n" in pattern or not pattern.lstrip("!=").startswith("/"):
                raise MetadataError(
                    "exclude", f"{pattern!r} must be an absolute path pattern like /var/log/*"
                )

    @classmethod
    def build(cls, defaults: bool, extra: Iterable[str]) -> ExcludeRules:
        """The default list (unless disabled) followed by the user's patterns."""
        return cls((*(DEFAULT_EXCLUDES if defaults else ()), *extra))

    def matcher(self) -> Callable[[bytes], Action]:
        """Decide for one entry (relative name, no './'), ignoring its parents."""
        actions = {"!": Action.KEEP, "=": Action.EMPTY}
        # One regex, last pattern first: the first alternative that matches is the last
        # pattern in the list, and lastgroup says which one it was.
        indexed = list(enumerate(self.patterns))[::-1]
        regex = re.compile(
            "|".join(f"(?P<p{i}>{translate(p.lstrip('!='))})" for i, p in indexed) or "(?!)"
        )
        action_of = {f"p{i}": actions.get(p[0], Action.DROP) for i, p in indexed}

        def decide(name: bytes) -> Action:
            found = regex.match("/" + os.fsdecode(name))
            return Action.KEEP if found is None else action_of[str(found.lastgroup)]

        return decide

    def stream_decider(self) -> Callable[[Member], Action]:
        """Decide for members of a tar stream: everything below a dropped directory is dropped."""
        decide = self.matcher()
        dropped: set[bytes] = set()

        def member_action(member: Member) -> Action:
            parts = member.name.split(b"/")
            if any(b"/".join(parts[:i]) in dropped for i in range(1, len(parts))):
                return Action.DROP
            action = decide(member.name) if member.name else Action.KEEP
            if action is Action.DROP and member.type == ord("5"):
                dropped.add(member.name)
            return action

        return member_action

    def empty_decider(self) -> Callable[[Member], Action]:
        """Only the '=' rules, for a stream whose entries were already chosen by walk()."""
        rules = ExcludeRules(tuple(p for p in self.patterns if p.startswith("=")))
        decide = rules.matcher()
        return lambda member: Action.EMPTY if decide(member.name) is Action.EMPTY else Action.KEEP


def walk(root: Path, rules: ExcludeRules, out: BinaryIO) -> int:
    """Write './name\\0' for every entry to pack, in GNU tar --sort=name order; return the count.

    Excluded directories are not descended into, and neither are other file systems
    (their mount point itself is kept), like tar --one-file-system.
    """
    decide = rules.matcher()
    root_bytes = os.fsencode(root)
    try:
        device = os.lstat(root_bytes).st_dev
    except OSError as err:
        raise _read_error(root, err) from err
    out.write(b".\0")
    count = 1
    # depth first, each directory's entries sorted by name: the order of tar --sort=name
    stack = [iter(_sorted_entries(root_bytes, b""))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        child, is_dir = entry
        if decide(child) is Action.DROP:
            continue
        out.write(b"./" + child + b"\0")
        count += 1
        if is_dir and os.lstat(root_bytes + b"/" + child).st_dev == device:
            stack.append(iter(_sorted_entries(root_bytes, child)))
    return count


def _sorted_entries(root: bytes, rel: bytes) -> list[tuple[bytes, bool]]:
    """(relative name, is a directory) of the entries of root/rel, sorted by name."""
    path = root + b"/" + rel if rel else root
    prefix = rel + b"/" if rel else b""
    try:
        with os.scandir(path) as entries:
            found = [(prefix + e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    except OSError as err:
        raise _read_error(Path(os.fsdecode(path)), err) from err
    return sorted(found)


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
        raise FormatError(f"cannot read rootfs {root}: {err.strerror}") from err
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
