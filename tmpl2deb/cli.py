"""Command line: argparse set-up, one cmd_<verb> per subcommand, logging, errors -> exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tmpl2deb import __version__, rootfs
from tmpl2deb.errors import Tmpl2debError
from tmpl2deb.metadata import DEFAULT_MAINTAINER, parent_field

log = logging.getLogger("tmpl2deb")

EXIT_CODES = """exit codes:
  0    success
  1    error (bad input, failed check, failed external tool)
  2    usage error
  130  interrupted"""


class _CliArgs(argparse.Namespace):
    """The parsed command line (all verbs)."""

    command: str
    verbose: int
    quiet: bool
    debug: bool
    rootfs: Path
    name: str
    version: str
    arch: str
    package: str
    feature: list[str]
    parent: str
    signature: str
    exclude: list[str]
    exclude_from: list[Path]
    no_default_excludes: bool
    level: int
    output: Path
    maintainer: str
    deb: Path
    json: bool
    source: Path
    dest: Path


def source_date_epoch(environ: dict[str, str] | os._Environ[str]) -> int:
    """SOURCE_DATE_EPOCH if set (and valid), else the current time."""
    value = environ.get("SOURCE_DATE_EPOCH", "")
    if not value:
        return int(time.time())
    if not value.isdigit():
        raise Tmpl2debError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds")
    return int(value)


def _read_patterns(files: Sequence[Path]) -> list[str]:
    patterns: list[str] = []
    for path in files:
        try:
            lines = path.read_text().splitlines()
        except OSError as err:
            raise Tmpl2debError(f"cannot read exclude file {path}: {err.strerror}") from err
        patterns += [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    return patterns


def cmd_pack(args: _CliArgs) -> None:
    from tmpl2deb.pack import PackOptions, pack

    excludes = rootfs.ExcludeRules.build(
        not args.no_default_excludes, [*args.exclude, *_read_patterns(args.exclude_from)]
    )
    options = PackOptions(
        name=args.name,
        mtime=source_date_epoch(os.environ),
        output=args.output,
        version=args.version,
        architecture=args.arch,
        package=args.package,
        features=tuple(args.feature),
        parent=parent_field(args.parent) if args.parent else "",
        signature=args.signature,
        excludes=excludes,
        level=args.level,
        maintainer=args.maintainer,
    )
    print(pack(args.rootfs, options))


def cmd_info(args: _CliArgs) -> None:
    from tmpl2deb.unpack import open_template

    template = open_template(args.deb)
    if args.json:
        sys.stdout.write(template.metadata_json.decode())
        return
    meta = template.metadata
    rows = [
        ("Package", meta.package),
        ("Version", meta.version),
        ("Architecture", meta.architecture),
        ("Image", meta.image),
        ("Build date", meta.build_date),
        ("Distro / suite", f"{meta.distro} {meta.suite}"),
        ("Features", " ".join(meta.features) or "-"),
        ("Parent", meta.parent or "-"),
        ("Signature", meta.signature or "-"),
        ("Packages", str(meta.packages)),
        ("Files", str(meta.rootfs_files)),
        ("Rootfs tar", f"{meta.rootfs_size} bytes, sha256 {meta.rootfs_sha256}"),
        ("Payload", f"{template.payload.span.size} bytes (zstd)"),
        ("Manifest", f"sha256 {meta.manifest_sha256}"),
        ("Excludes", " ".join(meta.excludes) or "-"),
        ("Format", str(meta.format)),
    ]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def cmd_unpack(args: _CliArgs) -> None:
    from tmpl2deb.unpack import unpack

    print(unpack(args.source, args.dest, args.package))


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output control")
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="show commands and details (default: one line per step)",
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", help="show only warnings and errors (default: off)"
    )
    group.add_argument(
        "--debug", action="store_true", help="show a traceback on errors (default: off)"
    )


def _sub(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
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
    _common(parser)
    return parser


def _add_pack(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _sub(
        subparsers,
        "pack",
        "Pack a root filesystem into a template .deb.",
        "SOURCE_DATE_EPOCH=1700000000 tmpl2deb pack rootfs/ --name base --version 1.0",
    )
    p.add_argument(
        "rootfs",
        type=Path,
        metavar="ROOTFS",
        help="rootfs directory, or a .tar, .tar.zst, .tar.gz or .tar.xz of one",
    )
    p.add_argument(
        "--name",
        required=True,
        help="image name; the package is tmpl-NAME (lower case, '_' as '-')",
    )
    p.add_argument(
        "--version",
        default="",
        help="package version (default: 0+YYYYMMDD.HHMMSS of the build date)",
    )
    p.add_argument(
        "--arch",
        default="",
        help="architecture (default: that of the rootfs' dpkg, else the host's)",
    )
    p.add_argument("--package", default="", help="package name (default: tmpl-NAME)")
    p.add_argument(
        "--feature",
        action="append",
        default=[],
        metavar="F",
        help="record a feature of the image (repeatable; default: none)",
    )
    p.add_argument(
        "--parent",
        default="",
        metavar="PKG=VERSION",
        help="the template this rootfs was derived from (default: none)",
    )
    p.add_argument(
        "--signature",
        default="",
        help="build signature to record, e.g. a bitbake task hash (default: none)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave out entries matching PATTERN, e.g. '/var/cache/foo/*'; '!PATTERN' "
        "keeps, '=PATTERN' empties a file (repeatable; default: none)",
    )
    p.add_argument(
        "--exclude-from",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="read exclude patterns from FILE, one per line (default: none)",
    )
    p.add_argument(
        "--no-default-excludes",
        action="store_true",
        help="do not apply the default host-leak excludes (default: apply them)",
    )
    p.add_argument(
        "--level", type=int, default=3, metavar="N", help="zstd compression level 1-19 (default: 3)"
    )
    p.add_argument(
        "--output",
        "-o",
        type=Path,
        default=Path(),
        metavar="DIR",
        help="directory for the .deb (default: the current directory)",
    )
    p.add_argument(
        "--maintainer",
        default=DEFAULT_MAINTAINER,
        help=f"Maintainer field (default: {DEFAULT_MAINTAINER})",
    )
    p.set_defaults(func=cmd_pack)


def _add_info(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _sub(
        subparsers,
        "info",
        "Show the metadata of a template .deb without unpacking it.",
        "tmpl2deb info tmpl-base_1.0_amd64.deb --json | jq .packages",
    )
    p.add_argument("deb", type=Path, metavar="DEB", help="template .deb or staging root")
    p.add_argument(
        "--json", action="store_true", help="print the embedded metadata.json (default: a table)"
    )
    p.set_defaults(func=cmd_info, package="")


def _add_unpack(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _sub(
        subparsers,
        "unpack",
        "Extract the rootfs of a template into a new directory.",
        "sudo tmpl2deb unpack tmpl-base_1.0_amd64.deb /srv/rootfs",
    )
    p.add_argument(
        "source",
        type=Path,
        metavar="DEB|STAGING",
        help="template .deb, or a staging root the template was installed into",
    )
    p.add_argument(
        "dest", type=Path, metavar="DEST", help="target directory; must not exist or be empty"
    )
    p.add_argument(
        "--package", default="", help="template package to use from STAGING (default: the only one)"
    )
    p.set_defaults(func=cmd_unpack)


def build_parser() -> argparse.ArgumentParser:
    """The tmpl2deb argument parser (also used to check the man page)."""
    parser = argparse.ArgumentParser(
        prog="tmpl2deb",
        description="Image templates as Debian packages: pack a root filesystem into a "
        ".deb, inspect it, unpack it.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"tmpl2deb {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_pack, _add_info, _add_unpack):
        add(subparsers)
    return parser


class _Formatter(logging.Formatter):
    """tmpl2deb: error: message -- level names in lower case, as Debian tools print them."""

    def format(self, record: logging.LogRecord) -> str:
        record.levelname = record.levelname.lower()
        return super().format(record)


def _setup_logging(args: _CliArgs) -> None:
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("tmpl2deb: %(levelname)s: %(message)s"))
    root = logging.getLogger("tmpl2deb")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run tmpl2deb with argv (default: sys.argv[1:]); return the exit code."""
    args = build_parser().parse_args(argv, namespace=_CliArgs())
    _setup_logging(args)
    try:
        args.func(args)
    except Tmpl2debError as err:
        log.error("%s", err, exc_info=args.debug)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except BrokenPipeError:
        return 1  # stdout closed by the reader (e.g. | head); nothing more to say
    return 0
