"""Error types raised by the library; the CLI turns them into one line and an exit code.

Three kinds, each with its exit code: the command line asks for something that cannot be
done as given (UsageError, 2); a file, tree, repository or template given is not what it must
be, or a tool refused it (InputError and its kinds, CommandError: 1); the host failed: an
I/O error, a full disk, a missing permission, a tool not installed (HostError and its kinds,
3).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence


class Tmpl2debError(Exception):
    """Base class: a failure the user can act on, reported without a traceback."""

    exit_code = 1


class UsageError(Tmpl2debError):
    """The command line asks for something that cannot be done as given (exit code 2)."""

    exit_code = 2


class InputError(Tmpl2debError):
    """What was given (a file, a tree, a repository, a template) is not what it must be, or
    is refused (exit code 1)."""


class MetadataError(InputError):
    """A template metadata field is missing or invalid."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid {field}: {reason}")
        self.field = field
        self.reason = reason


class FormatError(InputError):
    """A file is not a well-formed template package or rootfs archive."""


class IntegrityError(InputError):
    """A checksum or size recorded in a template does not match its payload."""


class UnsafeArchiveError(InputError):
    """A rootfs archive holds a member that would escape the target directory."""


class HostError(Tmpl2debError):
    """The host failed: an I/O error, a full disk, a tool not installed (exit code 3)."""

    exit_code = 3


class PrivilegeError(HostError):
    """The step needs root (or another privilege) that the process does not have."""


class CommandError(Tmpl2debError):
    """An external tool failed (exit code 1): most often on what it was given (a corrupt
    payload for zstd, a tampered index for apt), which its message, quoted, says."""

    def __init__(self, message: str, argv: Sequence[str] = (), returncode: int | None = None):
        super().__init__(message)
        self.argv = list(argv)
        self.returncode = returncode


class MissingToolError(CommandError, HostError):
    """An external tool is not installed (exit code 3)."""


# what the user named that is not there, or not of the right kind: their input
_INPUT_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG,
                           errno.ELOOP})  # fmt: skip


def os_error(err: OSError, message: str) -> Tmpl2debError:
    """The error to raise for err, message (which names the path) plus its strerror: a path
    that is not there is the input's fault, a denied permission needs a privilege, anything
    else (EIO, ENOSPC, ...) is the host's."""
    text = f"{message}: {err.strerror or err}"
    if err.errno in _INPUT_ERRNOS:
        return InputError(text)
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PrivilegeError(text)
    return HostError(text)


def disk_full(err: BaseException) -> bool:
    """Whether ERR (ours, or the OS's) says that a file system is full."""
    return getattr(err, "errno", None) == errno.ENOSPC or "No space left on device" in str(err)
