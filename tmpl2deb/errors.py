"""Error types raised by the library; the CLI turns them into one line and exit code 1."""

from __future__ import annotations

import errno
from collections.abc import Sequence


class Tmpl2debError(Exception):
    """Base class: a failure the user can act on, reported without a traceback."""


class UsageError(Tmpl2debError):
    """The command line asks for something that cannot be done as given (exit code 2)."""


class MetadataError(Tmpl2debError):
    """A template metadata field is missing or invalid."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid {field}: {reason}")
        self.field = field
        self.reason = reason


class FormatError(Tmpl2debError):
    """A file is not a well-formed template package or rootfs archive."""


class IntegrityError(Tmpl2debError):
    """A checksum or size recorded in a template does not match its payload."""


class UnsafeArchiveError(Tmpl2debError):
    """A rootfs archive holds a member that would escape the target directory."""


class PrivilegeError(Tmpl2debError):
    """The step needs root (or another privilege) that the process does not have."""


class CommandError(Tmpl2debError):
    """An external tool failed or is missing."""

    def __init__(self, message: str, argv: Sequence[str] = (), returncode: int | None = None):
        super().__init__(message)
        self.argv = list(argv)
        self.returncode = returncode


def disk_full(err: BaseException) -> bool:
    """Whether ERR (ours, or the OS's) says that a file system is full."""
    return getattr(err, "errno", None) == errno.ENOSPC or "No space left on device" in str(err)
