"""publish, remove and list: the template repository (Isar's base-apt layout, signed)."""

from __future__ import annotations

import logging
from pathlib import Path

from tmpl2deb.commands import render
from tmpl2deb.commands.common import Args, Subparsers, add_lock_timeout, subcommand
from tmpl2deb.errors import UsageError

log = logging.getLogger("tmpl2deb")


class PublishArgs(Args):
    repo: Path
    debs: list[Path]
    codename: str
    component: str
    sign_with: str
    force: bool
    retain: int | None
    packages: bool
    lock_timeout: float


class RemoveArgs(Args):
    repo: Path
    package: str
    version: str
    codename: str
    arch: str
    lock_timeout: float


class ListArgs(Args):
    repo: Path
    codename: str
    json: bool
    check: bool


def run_publish(args: PublishArgs) -> None:
    from tmpl2deb.repo import PACKAGES_COMPONENT, publish, publish_packages

    if args.packages:
        if args.retain is not None:
            raise UsageError("--retain applies to templates, not with --packages")
        for package, version, arch in publish_packages(
            args.repo,
            args.debs,
            codename=args.codename,
            component=args.component or PACKAGES_COMPONENT,
            sign_with=args.sign_with,
            force=args.force,
            lock_timeout=args.lock_timeout,
        ):
            print(f"{package} {version} {arch}")
        return
    for meta in publish(
        args.repo,
        args.debs,
        codename=args.codename,
        component=args.component or "main",
        sign_with=args.sign_with,
        force=args.force,
        retain=args.retain,
        lock_timeout=args.lock_timeout,
    ):
        print(f"{meta.package} {meta.version} {meta.architecture}")


def run_remove(args: RemoveArgs) -> None:
    from tmpl2deb.repo import remove

    for line in remove(
        args.repo,
        args.package,
        args.version,
        codename=args.codename,
        architecture=args.arch,
        lock_timeout=args.lock_timeout,
    ):
        print(line)


def run_list(args: ListArgs) -> None:
    from tmpl2deb.repo import check_repo, list_templates

    check_repo(args.repo)
    if args.check:
        from tmpl2deb.repo import verify

        log.info("%s: indices and %d .debs match their digests", args.repo, verify(args.repo))
    render.repository(list_templates(args.repo, args.codename), args.json)


def add_publish(subparsers: Subparsers) -> None:
    p = subcommand(
        subparsers,
        "publish",
        "Add template .debs to a repository laid out like Isar's base-apt (created if needed).",
        "tmpl2deb publish --repo /srv/templates --sign-with 0x1234ABCD tmpl-base_1.0_amd64.deb\n"
        "  tmpl2deb publish --repo /srv/templates --codename bookworm --packages \\\n"
        "      isar-apt/debian-bookworm/pool/main/*/*/*.deb",
    )
    p.add_argument(
        "debs", type=Path, nargs="+", metavar="DEB", help="template .deb files (or packages)"
    )
    p.add_argument(
        "--packages",
        action="store_true",
        help="the .debs are the platform's own binary packages (what its build put in "
        "isar-apt), not templates: publish them into their own component (default: "
        "packages), every version kept, for application teams to install or build against",
    )
    p.add_argument("--repo", type=Path, required=True, metavar="DIR", help="repository directory")
    p.add_argument(
        "--codename",
        default="",
        help="distribution to publish into (default: the suite the templates record)",
    )
    p.add_argument(
        "--component", default="", help="component (default: main; with --packages: packages)"
    )
    p.add_argument(
        "--sign-with",
        default="",
        metavar="KEYID",
        help="gpg key that signs Release (InRelease, Release.gpg); its public key is "
        "exported to DIR/archive-keyring.gpg (default: unsigned, or the key the distribution "
        "was signed with before)",
    )
    p.add_argument(
        "--retain",
        type=int,
        default=None,
        metavar="N",
        help="keep the N newest versions of each template, and every version a kept "
        "template is a delta of; 0 keeps all; recorded in conf/distributions (default: "
        "what is recorded there, else all)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a version the repository already has with other contents (default: "
        "refuse; images built from it notice the change)",
    )
    add_lock_timeout(p)
    p.set_defaults(func=run_publish)


def add_remove(subparsers: Subparsers) -> None:
    p = subcommand(
        subparsers,
        "remove",
        "Remove a template version from a repository (refused while a template depends on it).",
        "tmpl2deb remove --repo /srv/templates tmpl-base 1.0",
    )
    p.add_argument("package", metavar="PACKAGE", help="template package name")
    p.add_argument("version", metavar="VERSION", help="its version")
    p.add_argument("--repo", type=Path, required=True, metavar="DIR", help="repository directory")
    p.add_argument("--codename", default="", help="only from this distribution (default: all)")
    p.add_argument("--arch", default="", help="only this architecture (default: all)")
    add_lock_timeout(p)
    p.set_defaults(func=run_remove)


def add_list(subparsers: Subparsers) -> None:
    p = subcommand(
        subparsers,
        "list",
        "List the templates in a repository.",
        "tmpl2deb list --repo /srv/templates",
    )
    p.add_argument("--repo", type=Path, required=True, metavar="DIR", help="repository directory")
    p.add_argument("--codename", default="", help="only this distribution (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON (default: a table)")
    p.add_argument(
        "--check",
        action="store_true",
        help="first check every index against its Release and every .deb against its index "
        "(default: off)",
    )
    p.set_defaults(func=run_list)
