"""pack and unpack: a root filesystem into a template .deb, and back."""

from __future__ import annotations

import os
from pathlib import Path

from tmpl2deb.commands.common import (
    CheckArgs,
    DebOutputArgs,
    Subparsers,
    add_checks,
    add_deb_output,
    add_staging_package,
    add_with_parent,
    expect,
    read_patterns,
    source_date_epoch,
    subcommand,
)
from tmpl2deb.excludes import ExcludeRules
from tmpl2deb.metadata import parent_field


class PackArgs(DebOutputArgs):
    rootfs: Path
    name: str
    version: str
    arch: str
    package: str
    feature: list[str]
    parent: str
    parent_sha256: str
    signature: str
    exclude: list[str]
    exclude_from: list[Path]
    no_default_excludes: bool
    delta_from: Path | None
    delta_package: str


class UnpackArgs(DebOutputArgs, CheckArgs):
    source: Path
    dest: Path
    staged_package: str
    arch: str


def run_pack(args: PackArgs) -> None:
    from tmpl2deb.pack import PackOptions, pack

    excludes = ExcludeRules.build(
        not args.no_default_excludes, [*args.exclude, *read_patterns(args.exclude_from)]
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
        parent_sha256=args.parent_sha256,
        signature=args.signature,
        excludes=excludes,
        level=args.level,
        maintainer=args.maintainer,
        delta_from=args.delta_from,
        delta_package=args.delta_package,
        with_parents=tuple(args.with_parent),
    )
    print(pack(args.rootfs, options))


def run_unpack(args: UnpackArgs) -> None:
    from tmpl2deb.unpack import unpack

    checks = expect(args, args.arch)
    print(unpack(args.source, args.dest, args.staged_package, args.with_parent, checks))


def add_pack(subparsers: Subparsers) -> None:
    p = subcommand(
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
        "--parent-sha256",
        default="",
        metavar="SHA256",
        help="the parent's Template-Rootfs-Sha256, to record with --parent (default: none)",
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
        help="leave out entries matching PATTERN, e.g. '/srv/scratch/*'; '!PATTERN' "
        "keeps, '=PATTERN' empties a file, '~PATTERN' keeps directories and what packages "
        "own and drops the rest (repeatable; default: none)",
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
        help="do not apply the default excludes of host leaks, logs, caches and temporary "
        "files (default: apply them)",
    )
    delta = p.add_argument_group("delta template")
    delta.add_argument(
        "--delta-from",
        type=Path,
        default=None,
        metavar="DEB|STAGING",
        help="ship the rootfs as a tar delta against this parent template, which the new "
        "package then depends on (default: a full template)",
    )
    delta.add_argument(
        "--delta-package",
        default="",
        metavar="PKG",
        help="the parent's package in a STAGING root (default: the one no other is a delta of)",
    )
    add_with_parent(delta)
    add_deb_output(p, "zstd compression level", "the .deb", "Maintainer field")
    p.set_defaults(func=run_pack)


def add_unpack(subparsers: Subparsers) -> None:
    p = subcommand(
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
    add_staging_package(p)
    add_with_parent(p)
    add_checks(p, "the architecture the build needs (default: any)")
    p.set_defaults(func=run_unpack)
