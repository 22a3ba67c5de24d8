"""The only place that starts external programs: run() to completion, or spawn() for pipelines."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shlex
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import IO, Any, NoReturn, Protocol

from tmpl2deb.errors import CommandError, MissingToolError, Tmpl2debError
from tmpl2deb.requirements import tool_package

log = logging.getLogger(__name__)

StrPath = str | os.PathLike[str]


def _missing(name: str) -> str:
    return f"{name} not found; install package {tool_package(name)}"


# Kept from the caller's environment: where gpg keys live, and how to reach the network.
_PROXIES = ("http_proxy", "https_proxy", "no_proxy")
PASSTHROUGH = ("HOME", "GNUPGHOME", "TMPDIR", *_PROXIES)


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal, predictable environment for external tools."""
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C.UTF-8"}
    env.update((name, os.environ[name]) for name in PASSTHROUGH if name in os.environ)
    for name in _PROXIES:  # apt reads only the lower-case names; curl and wget take both
        if name not in env and name.upper() in os.environ:
            env[name] = os.environ[name.upper()]
    if extra:
        env.update(extra)
    return env


def show_progress() -> bool:
    """Whether long steps show progress: tmpl2deb's log shows info (not --quiet)."""
    return logging.getLogger("tmpl2deb").isEnabledFor(logging.INFO)


def _argv(argv: Sequence[StrPath]) -> list[str]:
    return [os.fspath(a) for a in argv]


def _tail(text: str, lines: int = 5) -> str:
    """The last lines of a tool's stderr; only apt's errors (and why a signature failed)
    when there are any."""
    all_lines = text.strip().splitlines()
    errors = [line for line in all_lines if line.startswith("E: ") or "GPG error" in line]
    return " | ".join((errors or all_lines)[-lines:])


def run(
    argv: Sequence[StrPath],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    capture: bool = False,
    show: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run argv to completion; raise CommandError if it cannot start or exits non-zero.
    With show, what the tool prints goes to our stderr (apt's own progress), else capture
    keeps it; its stderr is always kept for the error message."""
    args = _argv(argv)
    log.debug("+ %s", shlex.join(args))
    try:
        result = subprocess.run(
            args,
            cwd=cwd,
            env=base_env(env),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=2 if show else subprocess.PIPE if capture else None,  # 2: our stderr
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    except FileNotFoundError as err:
        raise MissingToolError(_missing(args[0]), args) from err
    if result.returncode != 0:
        raise CommandError(
            f"{args[0]} failed with exit code {result.returncode}: {_tail(result.stderr)}",
            args,
            result.returncode,
        )
    if result.stderr:
        log.debug("%s: %s", args[0], result.stderr.rstrip())
    return result


class Stage(Protocol):
    """A stage of a streaming pipeline: a tool (Process), or a thread writing a pipe."""

    @property
    def stdout(self) -> IO[bytes]: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def wait(self) -> object: ...


class Process:
    """A started process of a streaming pipeline; wait() raises like run() on failure."""

    def __init__(self, popen: subprocess.Popen[bytes], args: list[str], stderr: IO[bytes]):
        self.popen = popen
        self.args = args
        self._stderr = stderr

    @property
    def stdin(self) -> IO[bytes]:
        assert self.popen.stdin is not None
        return self.popen.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self.popen.stdout is not None
        return self.popen.stdout

    def close(self) -> None:
        """Close our ends of its pipes (it then fails on its next read or write)."""
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def abort(self) -> None:
        """Kill it if it still runs."""
        if self.popen.poll() is None:
            self.popen.kill()

    def wait(self) -> str:
        """Wait for the process; raise CommandError with its stderr tail on a non-zero exit,
        else return what it wrote to stderr."""
        code = self.popen.wait()
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        if code != 0:
            raise CommandError(
                f"{self.args[0]} failed with exit code {code}: {_tail(text)}", self.args, code
            )
        if text:
            log.debug("%s: %s", self.args[0], text.rstrip())
        return text


def grow_pipe(fd: int) -> None:
    """Use 1 MiB pipe buffers: fewer context switches between the stages of a pipeline."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)


F_SETPIPE_SZ = 1031  # from <fcntl.h>; Python's fcntl module has it only from 3.10 on Linux


@contextmanager
def spawn(
    argv: Sequence[StrPath],
    *,
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[Process]:
    """Start argv for a streaming pipeline; it is killed if the block exits with an error.

    stdin/stdout are file descriptors, file objects or subprocess.PIPE; None means /dev/null
    for stdin and a pipe for stdout. stderr goes to an anonymous temporary file, so a chatty
    tool can never block on a full pipe.
    """
    import tempfile

    args = _argv(argv)
    log.debug("+ %s", shlex.join(args))
    with tempfile.TemporaryFile() as err:
        try:
            popen = subprocess.Popen(
                args,
                cwd=cwd,
                env=base_env(env),
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=subprocess.PIPE if stdout is None else stdout,
                stderr=err,
            )
        except FileNotFoundError as exc:
            raise MissingToolError(_missing(args[0]), args) from exc
        for stream in (popen.stdin, popen.stdout):
            if stream is not None:
                grow_pipe(stream.fileno())
        process = Process(popen, args, err)
        try:
            yield process
        finally:
            if popen.poll() is None:
                popen.kill()
                popen.wait()
            process.close()


@cache
def host_architecture() -> str:
    """The build host's dpkg architecture (asked once)."""
    return run(["dpkg", "--print-architecture"], capture=True).stdout.strip()


def pipeline_failed(
    err: Exception, *, upstream: Stage | None, downstream: Stage | None
) -> NoReturn:
    """Our pump between two tools broke: raise the tool failure that explains err.

    A broken pipe means the downstream tool died; a cut-short or garbled stream usually
    means the upstream tool did. Without such a failure, err itself is raised.
    """
    processes = [p for p in (upstream, downstream) if p is not None]
    for process in processes:
        process.close()
    failures: dict[int, Tmpl2debError] = {}
    for process in processes:
        try:
            process.wait()
        except Tmpl2debError as failure:
            failures[id(process)] = failure
    cause = downstream if isinstance(err, BrokenPipeError) else upstream
    if id(cause) in failures:
        raise failures[id(cause)] from err
    if isinstance(err, BrokenPipeError) and failures:
        raise next(iter(failures.values())) from err
    raise err
