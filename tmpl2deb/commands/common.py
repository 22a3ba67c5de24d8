"""What the subcommands share: the parser of each (its help, example and exit codes), the
options several have, the checks a template must pass, and the base of their parsed
arguments."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from tmpl2deb.errors import Tmpl2debError, os_error
from tmpl2deb.metadata import DEFAULT_MAINTAINER

if TYPE_CHECKING:
    from tmpl2deb.template import Expect

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

EXIT_CODES = """exit codes:
  0    success
  1    bad input: a file, tree, repository or template given is not what it must be,
       a check failed, or a tool (apt, zstd, tar) refused it
  2    usage error: the command line asks for something that cannot be done as given
  3    the host failed: an I/O error, a full disk, a missing permission, a tool not
       installed
  130  interrupted (SIGINT)
  143  terminated (SIGTERM)"""


class Args(argparse.Namespace):
    """What every subcommand's parsed arguments have."""

    command: str
    verbose: int
    quiet: bool
    debug: bool


class CheckArgs(Args):
    """The template checks (add_checks)."""

    distro: str
    suite: str
    expect_signature: str
    allow_mismatch: bool


class DebOutputArgs(Args):
    """The .deb pack or derive writes (add_deb_output), and a delta's parents."""

    level: int
    output: Path
    maintainer: str
    with_parent: list[Path]


def source_date_epoch(environ: dict[str, str] | os._Environ[str]) -> int:
    """SOURCE_DATE_EPOCH if set (and valid), else the current time."""
    value = environ.get("SOURCE_DATE_EPOCH", "")
    if not value:
        return int(time.time())
    if not value.isdigit():
        raise Tmpl2debError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds")
    return int(value)


def read_patterns(files: Sequence[Path]) -> list[str]:
    patterns: list[str] = []
    for path in files:
        try:
            lines = path.read_text().splitlines()
        except OSError as err:
            raise os_error(err, f"cannot read exclude file {path}") from err
        patterns += [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    return patterns


def key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise Tmpl2debError(f"--context {item!r}: expected KEY=VALUE")
    return key, value


def expect(args: CheckArgs, architecture: str = "") -> Expect:
    """The template checks (add_checks) as given on the command line."""
    from tmpl2deb.template import Expect

    return Expect(
        architecture=architecture,
        distro=args.distro,
        suite=args.suite,
        signature=args.expect_signature,
        allow_mismatch=args.allow_mismatch,
    )


def output_options(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """-v, -q and --debug, before the verb (TOP) or after it: a verb's copy has no default,
    so that it keeps what was given before the verb."""
    group = parser.add_argument_group("output control")

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default(0),
        help="show commands and details (default: one line per step)",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="show only warnings and errors (default: off)",
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="show a traceback on errors (default: off)",
    )


def subcommand(
    subparsers: Subparsers,
    name: str,
    summary: str,
    example: str,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=f"example:\n  {example}\n\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    output_options(parser)
    return parser


def add_with_parent(group: argparse._ActionsContainer) -> None:
    group.add_argument(
        "--with-parent",
        action="append",
        default=[],
        type=Path,
        metavar="DEB",
        help="parent template .deb of a delta template (repeatable; default: look for "
        "PACKAGE_VERSION_ARCH.deb next to the child, or in its staging root)",
    )


def add_deb_output(
    group: argparse._ActionsContainer, level: str, deb: str, maintainer: str
) -> None:
    """--level, --output and --maintainer of the .deb that pack or derive writes."""
    group.add_argument(
        "--level", type=int, default=3, metavar="N", help=f"{level} 1-19 (default: 3)"
    )
    group.add_argument(
        "--output",
        "-o",
        type=Path,
        default=Path(),
        metavar="DIR",
        help=f"directory for {deb} (default: the current directory)",
    )
    group.add_argument(
        "--maintainer",
        default=DEFAULT_MAINTAINER,
        help=f"{maintainer} (default: {DEFAULT_MAINTAINER})",
    )


def add_staging_package(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--package",
        dest="staged_package",
        default="",
        help="template package in STAGING (default: the one no other is a delta of)",
    )


def add_lock_timeout(p: argparse.ArgumentParser) -> None:
    from tmpl2deb.lock import DEFAULT_TIMEOUT

    p.add_argument(
        "--lock-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for another writer of the repository to finish "
        f"(default: {DEFAULT_TIMEOUT:.0f})",
    )


def add_source_spec(p: argparse.ArgumentParser) -> None:
    """--source LINE, --arch and the template spec of stage and resolve."""
    p.add_argument(
        "--source",
        dest="apt_source",
        required=True,
        metavar="LINE",
        help="apt source: 'deb [signed-by=KEY] URI SUITE COMPONENT' ([trusted=yes] skips "
        "the signature check)",
    )
    p.add_argument("--arch", default="", help="architecture of the template (default: the host's)")
    p.add_argument(
        "spec",
        metavar="PACKAGE[=VERSION]",
        help="template package: the newest, an exact version, or a relation like "
        "'tmpl-base (>= 1.2)'",
    )


def add_checks(p: argparse.ArgumentParser, arch_help: str = "") -> None:
    """The checks stage, derive and unpack make on a template (stage has its own --arch)."""
    checks = p.add_argument_group("template checks")
    if arch_help:
        checks.add_argument("--arch", default="", help=arch_help)
    checks.add_argument("--distro", default="", help="the distro the build needs (default: any)")
    checks.add_argument("--suite", default="", help="the suite the build needs (default: any)")
    checks.add_argument(
        "--expect-signature",
        default="",
        metavar="SIG",
        help="the build signature the template must record (default: any)",
    )
    checks.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="warn instead of failing when a check above does not match (default: fail)",
    )
