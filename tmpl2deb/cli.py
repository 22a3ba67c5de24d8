"""Command line: the parser of every subcommand (tmpl2deb.commands: one module per group, its
parsers and what each runs), logging with progress lines, errors to exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from tmpl2deb import __version__
from tmpl2deb.commands import apt, initrd, inspect, pack, repo
from tmpl2deb.commands.common import EXIT_CODES, Args, output_options, source_date_epoch
from tmpl2deb.errors import Tmpl2debError
from tmpl2deb.requirements import MODULE_PACKAGES

__all__ = ["build_parser", "main", "source_date_epoch"]

log = logging.getLogger("tmpl2deb")

# in the order of --help and the man page
_SUBCOMMANDS = (
    pack.add_pack,
    inspect.add_info,
    pack.add_unpack,
    repo.add_publish,
    repo.add_remove,
    repo.add_list,
    apt.add_stage,
    apt.add_resolve,
    initrd.add_initrd,
    apt.add_derive,
    inspect.add_diff,
    inspect.add_outdated,
)


def build_parser() -> argparse.ArgumentParser:
    """The tmpl2deb argument parser (also used to check the man page)."""
    parser = argparse.ArgumentParser(
        prog="tmpl2deb",
        description="Image templates as Debian packages: pack a root filesystem into a "
        ".deb, inspect it, publish it in an apt repository, stage it with apt, unpack it, and "
        "derive new images from it.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"tmpl2deb {__version__}")
    output_options(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


class _Formatter(logging.Formatter):
    """tmpl2deb: error: message -- level names in lower case, as Debian tools print them."""

    def format(self, record: logging.LogRecord) -> str:
        record.levelname = record.levelname.lower()
        return super().format(record)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr. Progress records (tmpl2deb.progress): on a terminal one line redrawn in place,
    elsewhere (CI logs, bitbake) one every LOG_EVERY seconds."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self._live = sys.stderr.isatty()
        self._drawn = False
        self._last = -1e9

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "progress_end", False):
            self.finish()
            return
        if getattr(record, "progress", False):
            if self._live:
                self.stream.write("\r\033[K" + self.format(record))
                self.stream.flush()
                self._drawn = True
                return
            from tmpl2deb.progress import LOG_EVERY

            now = time.monotonic()
            if now - self._last < LOG_EVERY:
                return
            self._last = now
        self.finish()
        super().emit(record)

    def finish(self) -> None:
        """End a live line, before other output or at exit."""
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False


def _setup_logging(args: Args) -> _Handler:
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    handler = _Handler()
    handler.setFormatter(_Formatter("tmpl2deb: %(levelname)s: %(message)s"))
    root = logging.getLogger("tmpl2deb")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    return handler


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like SIGINT's KeyboardInterrupt so that every step cleans up."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run tmpl2deb with argv (default: sys.argv[1:]); return the exit code."""
    import signal

    args = build_parser().parse_args(argv, namespace=Args())
    handler = _setup_logging(args)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code: int | None = args.func(args)
    except Tmpl2debError as err:  # its kind decides the exit code (errors.py)
        log.error("%s", err, exc_info=args.debug)
        return err.exit_code
    except KeyboardInterrupt as err:
        terminated = isinstance(err, _Terminated)
        log.error("terminated" if terminated else "interrupted")
        return 143 if terminated else 130
    except BrokenPipeError:
        return 1  # stdout closed by the reader (e.g. | head); nothing more to say
    except ModuleNotFoundError as err:  # of a Debian package not installed: say which
        package = MODULE_PACKAGES.get((err.name or "").partition(".")[0])
        if package is None:
            raise
        log.error("Python module %s not found; install package %s", err.name, package)
        return 1
    finally:
        handler.finish()
        signal.signal(signal.SIGTERM, previous)
    return code or 0
