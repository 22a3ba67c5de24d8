"""info, diff and outdated: what a template holds, what changed between two, what the mirror
has newer; nothing is unpacked."""

from __future__ import annotations

import logging
from pathlib import Path

from tmpl2deb.commands import render
from tmpl2deb.commands.common import (
    Args,
    Subparsers,
    add_staging_package,
    add_with_parent,
    subcommand,
)
from tmpl2deb.errors import UsageError

log = logging.getLogger("tmpl2deb")


class InfoArgs(Args):
    deb: Path
    staged_package: str
    json: bool
    packages: bool
    files: bool
    with_parent: list[Path]


class DiffArgs(Args):
    old: Path
    new: Path
    files: bool
    json: bool
    exit_code: bool
    with_parent: list[Path]


class OutdatedArgs(Args):
    deb: Path | None
    rootfs_dir: Path | None
    sources: list[str]
    staged_package: str
    json: bool


def run_info(args: InfoArgs) -> None:
    from tmpl2deb.template import open_template

    template = open_template(args.deb, args.staged_package)
    if args.packages:
        render.packages(template, args.json)
    elif args.files:
        render.files(template, args.with_parent, args.json)
    elif args.json:
        render.metadata_json(template)
    else:
        render.info(template, args.with_parent)


def run_diff(args: DiffArgs) -> int:
    """Print the differences; with --exit-code, 1 when there are any."""
    from tmpl2deb.diff import diff
    from tmpl2deb.template import open_template, resolve_chain

    old, new = (
        resolve_chain(open_template(path), args.with_parent) for path in (args.old, args.new)
    )
    result = diff(old, new, files=args.files)
    render.diff(old[0].name, new[0].name, result, args.files, args.json)
    differ = any((result.packages_added, result.packages_removed, result.packages_changed,
                  result.files_added, result.files_removed, result.files_changed))  # fmt: skip
    return 1 if args.exit_code and differ else 0


def run_outdated(args: OutdatedArgs) -> None:
    import json

    from tmpl2deb.outdated import outdated, outdated_rootfs
    from tmpl2deb.template import open_template

    if args.rootfs_dir is not None:
        if args.deb is not None or args.sources:
            raise UsageError("give either a template (with --source) or --rootfs, not both")
        newer = outdated_rootfs(args.rootfs_dir)
        what, total = str(args.rootfs_dir), None
    else:
        if args.deb is None:
            raise UsageError("give a template .deb or staging root, or --rootfs DIR")
        template = open_template(args.deb, args.staged_package)
        newer = outdated(template, args.sources)
        what, total = template.name, template.metadata.packages
    if args.json:
        rows = [{"package": n.name, "architecture": n.architecture, "version": n.version,
                 "candidate": n.candidate} for n in newer]  # fmt: skip
        print(json.dumps(rows, indent=2, sort_keys=True))
        return
    of = f" of {total}" if total is not None else ""
    log.info("%s: %d%s packages have newer versions in the sources", what, len(newer), of)
    for n in newer:
        print(f"{n.name} {n.architecture} {n.version} -> {n.candidate}")


def add_info(subparsers: Subparsers) -> None:
    p = subcommand(
        subparsers,
        "info",
        "Show the metadata of a template .deb without unpacking it.",
        "tmpl2deb info tmpl-base_1.0_amd64.deb --json | jq .packages",
    )
    p.add_argument("deb", type=Path, metavar="DEB", help="template .deb or staging root")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the embedded metadata.json, or with --packages a JSON list (default: text)",
    )
    p.add_argument(
        "--packages",
        action="store_true",
        help="list the packages of the rootfs (its manifest: name version architecture) "
        "instead (default: the metadata)",
    )
    p.add_argument(
        "--files",
        action="store_true",
        help="list the files of the rootfs like tar -tv (read from the payload, deltas "
        "resolved, verified; nothing extracted) instead (default: the metadata)",
    )
    add_staging_package(p)
    add_with_parent(p)
    p.set_defaults(func=run_info)


def add_diff(subparsers: Subparsers) -> None:
    p = subcommand(
        subparsers,
        "diff",
        "Show the packages and files added, removed and changed between two templates, "
        "from their manifests and rootfs tar listings, without unpacking either.",
        "tmpl2deb diff tmpl-base_1.0_amd64.deb tmpl-app_1.0_amd64.deb",
    )
    p.add_argument("old", type=Path, metavar="OLD", help="template .deb or staging root")
    p.add_argument("new", type=Path, metavar="NEW", help="template .deb or staging root")
    p.add_argument(
        "--packages-only",
        dest="files",
        action="store_false",
        help="compare the manifests only, not the files (default: both)",
    )
    p.add_argument("--json", action="store_true", help="print JSON (default: a list)")
    p.add_argument(
        "--exit-code",
        action="store_true",
        help="exit with 1 when the templates differ, as git diff --exit-code and diff(1) "
        "do (default: 0 either way)",
    )
    add_with_parent(p)
    p.set_defaults(func=run_diff)


def add_outdated(subparsers: Subparsers) -> None:
    p = subcommand(
        subparsers,
        "outdated",
        "List the packages of a template that apt sources have newer versions of (apt-get's "
        "own upgrade simulation against the template's manifest; nothing is unpacked).",
        "tmpl2deb outdated tmpl-base_1.0_amd64.deb "
        "--source 'deb http://deb.debian.org/debian-security bookworm-security main'\n"
        "  sudo tmpl2deb outdated --rootfs build/tmp/work/.../rootfs",
    )
    p.add_argument(
        "deb", type=Path, nargs="?", metavar="DEB|STAGING", help="template .deb or staging root"
    )
    p.add_argument(
        "--rootfs",
        dest="rootfs_dir",
        type=Path,
        metavar="DIR",
        help="instead of a template: the packages of this root filesystem that its own apt "
        "sources have newer (its package lists as they are, no update; needs root: chroot)",
    )
    p.add_argument(
        "--source",
        dest="sources",
        action="append",
        default=[],
        metavar="LINE",
        help="apt source to compare with, 'deb [OPTIONS] URI SUITE COMPONENT...' (repeatable)",
    )
    add_staging_package(p)
    p.add_argument("--json", action="store_true", help="print JSON (default: one line each)")
    p.set_defaults(func=run_outdated)
