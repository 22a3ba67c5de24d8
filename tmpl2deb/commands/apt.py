"""stage, resolve and derive: templates from an apt repository, and new images on them."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from tmpl2deb.commands.common import (
    Args,
    CheckArgs,
    DebOutputArgs,
    Subparsers,
    add_checks,
    add_deb_output,
    add_source_spec,
    add_staging_package,
    add_with_parent,
    expect,
    source_date_epoch,
    subcommand,
)
from tmpl2deb.errors import UsageError

log = logging.getLogger("tmpl2deb")


class StageArgs(CheckArgs):
    apt_source: str
    arch: str
    spec: str
    staging: Path
    offline: bool


class ResolveArgs(Args):
    apt_source: str
    arch: str
    spec: str
    more: list[str]
    packages: bool


class DeriveArgs(CheckArgs, DebOutputArgs):
    template: Path
    dest: Path
    staged_package: str
    sources: list[str]
    install: list[str]
    purge: list[str]
    arch: str
    template_name: str
    version: str
    feature: list[str]
    signature: str
    delta: bool


def run_stage(args: StageArgs) -> None:
    from tmpl2deb.stage import stage

    start = time.monotonic()
    template = stage(
        args.apt_source,
        args.spec,
        args.staging,
        architecture=args.arch,
        expect=expect(args),
        offline=args.offline,
    )
    meta = template.metadata
    log.info("Staged %s %s (%s) in %s (%.1f s)", meta.package, meta.version, meta.architecture,
             args.staging, time.monotonic() - start)  # fmt: skip
    print(args.staging)


def run_resolve(args: ResolveArgs) -> None:
    from tmpl2deb.resolve import resolve, resolve_packages

    if args.packages:
        for found in resolve_packages(args.apt_source, [args.spec, *args.more], args.arch):
            print(found.line())
        return
    if args.more:
        raise UsageError("one template at a time (several names only with --packages)")
    print(resolve(args.apt_source, args.spec, args.arch).line())


def run_derive(args: DeriveArgs) -> None:
    from tmpl2deb.derive import DeriveOptions, derive
    from tmpl2deb.pack import PackOptions

    template = None
    if args.template_name:
        template = PackOptions(
            name=args.template_name,
            mtime=source_date_epoch(os.environ),
            output=args.output,
            version=args.version,
            features=tuple(args.feature),
            signature=args.signature,
            level=args.level,
            maintainer=args.maintainer,
            delta_from=args.template if args.delta else None,
            delta_package=args.staged_package,
            with_parents=tuple(args.with_parent),
        )
    elif args.version or args.feature or args.signature or args.delta:
        raise UsageError("--version, --feature, --signature and --delta need --template-name")
    options = DeriveOptions(
        sources=tuple(args.sources),
        install=tuple(args.install),
        purge=tuple(args.purge),
        package=args.staged_package,
        expect=expect(args, args.arch),
        template=template,
        with_parents=tuple(args.with_parent),
    )
    result = derive(args.template, args.dest, options)
    print(result.deb or result.rootfs)


def add_stage(subparsers: Subparsers) -> None:
    p = subcommand(
        subparsers,
        "stage",
        "Download a template (and the parents a delta needs) with apt-get into a staging "
        "root (never the host): apt checks it against the signed index, nothing of it runs.",
        "tmpl2deb stage --source 'deb [signed-by=/srv/templates/archive-keyring.gpg] "
        "http://repo.example.org/templates bookworm main' tmpl-base staging/",
    )
    add_source_spec(p)
    add_checks(p)
    p.add_argument(
        "--offline",
        action="store_true",
        help="without the network (a rebuild with BB_NO_NETWORK): the package lists and .debs "
        "an earlier stage from the same source left in STAGING, which apt checked then",
    )
    p.add_argument(
        "staging",
        type=Path,
        metavar="STAGING",
        help="staging root with its own apt state (created if needed); the .debs are left in "
        "STAGING/var/cache/apt/archives for unpack",
    )
    p.set_defaults(func=run_stage)


def add_resolve(subparsers: Subparsers) -> None:
    p = subcommand(
        subparsers,
        "resolve",
        "Print which template an apt source holds for a spec: PACKAGE VERSION DEB_SHA256 "
        "ROOTFS_SHA256, read from the source's signed index (nothing installed, no root).",
        "tmpl2deb resolve --source 'deb [signed-by=/srv/templates/archive-keyring.gpg] "
        "http://repo.example.org/templates bookworm main' 'tmpl-base (>= 1.0)'\n"
        "  tmpl2deb resolve --packages --source 'deb [signed-by=/srv/templates/"
        "archive-keyring.gpg] http://repo.example.org/templates bookworm packages' libfoo-dev",
    )
    add_source_spec(p)
    p.add_argument("more", nargs="*", metavar="PACKAGE", help="more packages, with --packages")
    p.add_argument(
        "--packages",
        action="store_true",
        help="the names are ordinary packages (the platform's, published with publish "
        "--packages), not a template: print PACKAGE VERSION ARCH SHA256 URL of each",
    )
    p.set_defaults(func=run_resolve)


def add_derive(subparsers: Subparsers) -> None:
    p = subcommand(
        subparsers,
        "derive",
        "Build a new rootfs (and optionally the next template) on top of a template.",
        "tmpl2deb derive --source 'deb http://deb.debian.org/debian bookworm main' "
        "--install nginx --purge tzdata --template-name web tmpl-base_1.0_amd64.deb rootfs/",
    )
    p.add_argument(
        "template", type=Path, metavar="DEB|STAGING", help="template .deb or staging root"
    )
    p.add_argument("dest", type=Path, metavar="DEST", help="new rootfs; must not exist or be empty")
    add_staging_package(p)
    p.add_argument(
        "--source",
        dest="sources",
        action="append",
        default=[],
        metavar="LINE",
        help="apt source for the build, 'deb [OPTIONS] URI SUITE COMPONENT...'; signed-by "
        "keys are copied in for the build (repeatable; default: none)",
    )
    p.add_argument(
        "--install",
        action="append",
        default=[],
        metavar="PKG",
        help="package to install on top (repeatable; default: none)",
    )
    p.add_argument(
        "--purge",
        action="append",
        default=[],
        metavar="PKG",
        help="installed package to purge, with what only it needed (repeatable; default: none)",
    )
    add_checks(p, "the architecture the build needs (default: any)")
    out = p.add_argument_group("next template")
    out.add_argument(
        "--template-name",
        default="",
        metavar="NAME",
        help="also pack the result as template NAME, recording its parent (default: no)",
    )
    out.add_argument("--version", default="", help="its version (default: 0+YYYYMMDD.HHMMSS)")
    out.add_argument(
        "--feature", action="append", default=[], metavar="F", help="its features (repeatable)"
    )
    out.add_argument("--signature", default="", help="its build signature (default: none)")
    out.add_argument(
        "--delta",
        action="store_true",
        help="ship it as a tar delta against the template derived from (default: full)",
    )
    add_with_parent(out)
    add_deb_output(out, "zstd level", "its .deb", "its Maintainer field")
    p.set_defaults(func=run_derive)
