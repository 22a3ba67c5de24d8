"""Exclude rules: which entries of a rootfs a template leaves out, keeps, empties or cleans.

A pattern is an absolute path with shell wildcards (`*` also matches `/`); the last pattern
that matches an entry decides. `PATTERN` drops the entry (and all below a directory),
`!PATTERN` keeps it, `=PATTERN` keeps it with its metadata and empties a regular file, and
`~PATTERN` *cleans* it: directories and symlinks are kept (with owners, modes and xattrs),
directories descended into, a path that a package owns (dpkg's file lists in the rootfs) is
kept, a regular file emptied, and only files and nodes that no package owns are dropped.
Logs, caches and temporary files are cleaned, so that a package's /var/log/nginx survives
while the build's log files do not.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fnmatch import translate
from pathlib import Path

from tmpl2deb.errors import MetadataError, os_error
from tmpl2deb.tarstream import REGULAR, SYMLINK, Action, Member

DIRECTORY = ord("5")
REGULAR_FILE = ord("0")
_WILDCARD = re.compile(r"[*?\[]")

# Host leaks a template must not carry, then the logs, caches and temporary files it cleans.
# "/x/*" acts below /x and keeps /x itself.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    "/etc/apt/sources.list",
    "/etc/apt/sources.list.d/*",
    "/etc/apt/apt.conf",
    "/etc/apt/apt.conf.d/*proxy*",
    "/etc/resolv.conf",
    "/etc/hosts",
    "=/etc/machine-id",
    "~/var/lib/apt/lists/*",
    "~/var/cache/apt/*",
    "~/var/log/*",
    "~/tmp/*",
    "~/var/tmp/*",
    "/proc/*",
    "/sys/*",
    "~/run/*",
    "~/dev/*",
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

# what a pattern's first character makes of a match; anything else drops
_PREFIXES = "!=~"
CLEAN = "~"
_ACTIONS = {"!": Action.KEEP, "=": Action.EMPTY}

DPKG_INFO = b"var/lib/dpkg/info"


def check_pattern(pattern: str) -> None:
    """Raise unless PATTERN is an absolute path pattern, optionally after one of !=~."""
    body = pattern[1:] if pattern[:1] in _PREFIXES else pattern
    if "\n" in pattern or not body.startswith("/"):
        raise MetadataError(
            "exclude",
            f"{pattern!r} must be an absolute path pattern like /var/log/* (or !/, =/, ~/)",
        )


@dataclass(frozen=True, slots=True)
class ExcludeRules:
    """Ordered exclude patterns; the last pattern that matches an entry decides."""

    patterns: tuple[str, ...]

    def __post_init__(self) -> None:
        for pattern in self.patterns:
            check_pattern(pattern)

    @classmethod
    def build(cls, defaults: bool, extra: Iterable[str]) -> ExcludeRules:
        """The default list (unless disabled) followed by the user's patterns."""
        return cls((*(DEFAULT_EXCLUDES if defaults else ()), *extra))

    def _rule(self) -> Callable[[bytes], str | None]:
        """The prefix of the pattern that decides for a name ('' plain, None: no match)."""
        # One regex, last pattern first: the first alternative that matches is the last
        # pattern in the list, and lastgroup says which one it was.
        indexed = list(enumerate(self.patterns))[::-1]
        regex = re.compile(
            "|".join(f"(?P<p{i}>{translate(_body(p))})" for i, p in indexed) or "(?!)"
        )
        prefix_of = {f"p{i}": p[0] if p[0] in _PREFIXES else "" for i, p in indexed}

        def rule(name: bytes) -> str | None:
            found = regex.match("/" + os.fsdecode(name))
            return None if found is None else prefix_of[str(found.lastgroup)]

        return rule

    def select(self, owned: OwnedPaths) -> Selection:
        """The rules applied to one rootfs, whose packages own OWNED."""
        return Selection(self._rule(), owned, self.patterns)


def _body(pattern: str) -> str:
    return pattern[1:] if pattern[:1] in _PREFIXES else pattern


class OwnedPaths:
    """The paths that the rootfs' packages own (dpkg's *.list files), relative, sorted."""

    def __init__(self, paths: Iterable[bytes] = ()) -> None:
        self._paths = sorted({p.strip(b"/") for p in paths} - {b"", b"."})

    @classmethod
    def from_lists(cls, lists: Iterable[bytes]) -> OwnedPaths:
        """From the contents of dpkg's file lists (one absolute path per line)."""
        return cls(line for data in lists for line in data.split(b"\n"))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, bytes):
            return False
        i = bisect.bisect_left(self._paths, name)
        return i < len(self._paths) and self._paths[i] == name

    def __len__(self) -> int:
        return len(self._paths)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._paths)

    def below(self, directory: bytes) -> list[bytes]:
        """The owned paths below DIRECTORY (not itself)."""
        prefix = directory + b"/"
        start = bisect.bisect_left(self._paths, prefix)
        end = bisect.bisect_left(self._paths, prefix + b"\xff")
        return self._paths[start:end]


def read_owned(root: Path) -> OwnedPaths:
    """The paths the packages of the rootfs tree at ROOT own."""
    info = Path(os.fsdecode(os.fsencode(root) + b"/" + DPKG_INFO))
    try:
        lists = [p.read_bytes() for p in sorted(info.glob("*.list"))]
    except OSError as err:
        raise os_error(err, f"cannot read dpkg's file lists in {info}") from err
    return OwnedPaths.from_lists(lists)


def is_dpkg_list(name: bytes) -> bool:
    """A member of a rootfs tar that is one of dpkg's file lists."""
    return name.startswith(DPKG_INFO + b"/") and name.endswith(b".list") and name.count(b"/") == 4


class DpkgLists:
    """dpkg's file lists among the members of a rootfs tar (TarFilter's capture)."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, bytes) and is_dpkg_list(name)


class Selection:
    """The exclude rules applied to one rootfs: keep, empty or drop each entry, and note the
    package-owned paths that a pattern dropped (a template should never lose one)."""

    def __init__(
        self,
        rule: Callable[[bytes], str | None],
        owned: OwnedPaths,
        patterns: tuple[str, ...] = (),
    ) -> None:
        self._rule = rule
        self._owned = owned
        self._patterns = patterns
        self._dropped: set[bytes] = set()
        self.lost: list[bytes] = []

    def entry(self, name: bytes, kind: int) -> Action:
        """Decide for one entry (relative name, tar member type), ignoring its parents."""
        prefix = self._rule(name) if name else None
        if prefix is None:
            return Action.KEEP
        if prefix != CLEAN:
            return _ACTIONS.get(prefix, Action.DROP)
        if kind in (DIRECTORY, SYMLINK):
            return Action.KEEP  # the tree, and links: no content of the build in them
        if name not in self._owned:
            return Action.DROP
        return Action.EMPTY if kind in REGULAR else Action.KEEP

    def to_empty(self) -> list[bytes] | None:
        """The paths this selection empties where they are regular files, found without a
        walk: owned paths below the directory of a cleaning pattern, and emptying patterns
        without wildcards. None when an emptying pattern has a wildcard (any file may match
        it: only the walk can tell)."""
        names: set[bytes] = set()
        for pattern in self._patterns:
            prefix, body = pattern[:1], pattern[1:]
            literal = _WILDCARD.split(body, maxsplit=1)[0]
            if prefix == "=":
                if literal != body:
                    return None
                names.add(os.fsencode(body.strip("/")))
            elif prefix == CLEAN:
                directory = os.fsencode(literal[: literal.rfind("/")].strip("/"))
                names.update(self._owned.below(directory) if directory else self._owned)
        return sorted(n for n in names if self.entry(n, REGULAR_FILE) is Action.EMPTY)

    def dropped(self, name: bytes, is_dir: bool, exists: Callable[[bytes], bool]) -> None:
        """Note that NAME was left out (with all below it, for a directory)."""
        if name in self._owned:
            self.lost.append(name)
        if is_dir:
            self.lost += [p for p in self._owned.below(name) if exists(p)]

    def member(self, member: Member) -> Action:
        """Decide for a member of a tar stream: all below a dropped directory is dropped."""
        parts = member.name.split(b"/")
        if any(b"/".join(parts[:i]) in self._dropped for i in range(1, len(parts))):
            action = Action.DROP
        else:
            action = self.entry(member.name, member.type)
            if action is Action.DROP and member.type == DIRECTORY:
                self._dropped.add(member.name)
        if action is Action.DROP and member.name in self._owned:
            self.lost.append(member.name)
        return action

    def emptied(self, member: Member) -> Action:
        """For a stream whose entries walk() already chose: only what is to be emptied."""
        action = self.entry(member.name, member.type)
        return Action.EMPTY if action is Action.EMPTY else Action.KEEP
