"""Command line: argparse set-up, one cmd_<verb> per subcommand, logging, errors -> exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tmpl2deb import __version__
from tmpl2deb.errors import Tmpl2debError, UsageError
from tmpl2deb.excludes import ExcludeRules
from tmpl2deb.metadata import DEFAULT_MAINTAINER, parent_field

if TYPE_CHECKING:
    from tmpl2deb.stage import Expect
    from tmpl2deb.template import Template

log = logging.getLogger("tmpl2deb")

EXIT_CODES = """exit codes:
  0    success
  1    error (bad input, failed check, failed external tool)
  2    usage error
  130  interrupted (SIGINT)
  143  terminated (SIGTERM)"""


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
    parent_sha256: str
    force: bool
    signature: str
    exclude: list[str]
    exclude_from: list[Path]
    no_default_excludes: bool
    level: int
    output: Path
    maintainer: str
    deb: Path
    rootfs_dir: Path | None
    json: bool
    source: Path
    dest: Path
    repo: Path
    debs: list[Path]
    codename: str
    component: str
    sign_with: str
    apt_source: str
    sources: list[str]
    expect_signature: str
    spec: str
    staging: Path
    template: Path
    install: list[str]
    purge: list[str]
    distro: str
    suite: str
    allow_mismatch: bool
    template_name: str
    delta: bool
    delta_from: Path | None
    delta_package: str
    with_parent: list[Path]
    old: Path
    new: Path
    files: bool
    packages: bool
    action: str
    context: list[str]
    exit_code: bool
    differ: bool
    retain: int | None
    lock_timeout: float
    check: bool


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

    excludes = ExcludeRules.build(
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


def cmd_info(args: _CliArgs) -> None:
    from tmpl2deb.template import open_template

    template = open_template(args.deb, args.package)
    if args.packages:
        _print_packages(template, args.json)
        return
    if args.files:
        _print_files(template, args)
        return
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
        ("Parent rootfs", f"sha256 {meta.parent_sha256}" if meta.parent_sha256 else "-"),
        ("Added", " ".join(meta.added) or "-"),
        ("Removed", " ".join(meta.removed) or "-"),
        ("Signature", meta.signature or "-"),
        ("Packages", str(meta.packages)),
        ("Files", str(meta.rootfs_files)),
        ("Rootfs tar", f"{meta.rootfs_size} bytes"),
        ("Rootfs", f"{'sha256' if meta.format == 1 else 'identity'} {meta.rootfs_sha256}"),
        (
            "Payload",
            f"{template.payload.span.size} bytes ({_kind(template)})"
            + (f", sha256 {meta.payload_sha256}" if meta.payload_sha256 else ""),
        ),
        ("Manifest", f"sha256 {meta.manifest_sha256}"),
        ("Excludes", " ".join(meta.excludes) or "-"),
        ("Format", str(meta.format)),
    ]
    rows += [("Chain" if n == 0 else "", line) for n, line in enumerate(_chain(template, args))]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}".rstrip())


def _print_files(template: Template, args: _CliArgs) -> None:
    """The rootfs listing, like tar -tv, read from the payload (deltas resolved), verified."""
    import stat

    from tmpl2deb.diff import listing
    from tmpl2deb.template import resolve_chain

    entries = listing(resolve_chain(template, args.with_parent))
    if args.json:
        import dataclasses
        import json

        rows = [{"path": path, **dataclasses.asdict(e)} for path, e in entries.items()]
        print(json.dumps(rows, indent=2))
        return
    kinds = {"directory": stat.S_IFDIR, "symlink": stat.S_IFLNK, "char device": stat.S_IFCHR,
             "block device": stat.S_IFBLK, "fifo": stat.S_IFIFO}  # fmt: skip
    for path, e in entries.items():
        mode = stat.filemode(kinds.get(e.kind, stat.S_IFREG) | e.mode)
        size = e.device or str(e.size)
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.mtime))
        link = f" -> {e.link}" if e.kind == "symlink" else f" link to {e.link}" if e.link else ""
        line = f"{mode} {e.owner:>11} {size:>10} {when} {path}{link}"
        # a name that is not UTF-8 is shown with backslash escapes, as tar -tv does
        print(line.encode(errors="surrogateescape").decode(errors="backslashreplace"))


def _print_packages(template: Template, as_json: bool) -> None:
    """The manifest: 'name version architecture' per line, or a JSON list."""
    rows = [line.split() for line in template.manifest.decode().splitlines() if line.strip()]
    if as_json:
        import json

        keys = ("package", "version", "architecture")
        print(json.dumps([dict(zip(keys, row, strict=True)) for row in rows], indent=2))
        return
    for row in rows:
        print(" ".join(row))


def _kind(template: Template) -> str:
    return "tar delta, zstd" if template.metadata.delta else "zstd"


def _chain(template: Template, args: _CliArgs) -> list[str]:
    """One line per template from this one down to the full one at the bottom."""
    from tmpl2deb.template import resolve_chain

    try:
        chain, missing = resolve_chain(template, args.with_parent), ""
    except Tmpl2debError as err:
        chain, missing = [template], str(err)
    lines = [
        f"{t.metadata.package} {t.metadata.version} {t.metadata.payload} "
        f"{_size(t.payload.span.size)}"
        for t in chain
    ]
    return lines + ([f"(incomplete: {missing})"] if missing else [])


def cmd_unpack(args: _CliArgs) -> None:
    from tmpl2deb.unpack import unpack

    print(unpack(args.source, args.dest, args.package, args.with_parent))


def cmd_diff(args: _CliArgs) -> int:
    """Print the differences; with --exit-code, 1 when there are any."""
    _print_diff(args)
    return 1 if args.exit_code and args.differ else 0


def _print_diff(args: _CliArgs) -> None:
    import json

    from tmpl2deb.diff import diff
    from tmpl2deb.template import open_template, resolve_chain

    old, new = (
        resolve_chain(open_template(path), args.with_parent) for path in (args.old, args.new)
    )
    result = diff(old, new, files=args.files)
    args.differ = any((result.packages_added, result.packages_removed, result.packages_changed,
                       result.files_added, result.files_removed, result.files_changed))  # fmt: skip
    if args.json:
        data = {
            "old": f"{old[0].name}",
            "new": f"{new[0].name}",
            "packages": {"added": result.packages_added, "removed": result.packages_removed,
                         "changed": result.packages_changed},
        }  # fmt: skip
        if args.files:
            data["files"] = {
                "added": result.files_added,
                "removed": result.files_removed,
                "changed": dict(result.files_changed),
            }
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    print(f"--- {old[0].name}")
    print(f"+++ {new[0].name}")
    print(
        f"packages: {len(result.packages_added)} added, {len(result.packages_removed)} "
        f"removed, {len(result.packages_changed)} changed"
    )
    for mark, lines in (("+", result.packages_added), ("-", result.packages_removed),
                        ("~", result.packages_changed)):  # fmt: skip
        for line in lines:
            print(f"{mark} {line}")
    if not args.files:
        return
    print(
        f"files: {len(result.files_added)} added, {len(result.files_removed)} removed, "
        f"{len(result.files_changed)} changed"
    )
    for path in result.files_added:
        print(f"+ {_printable(path)}")
    for path in result.files_removed:
        print(f"- {_printable(path)}")
    for path, what in result.files_changed:
        print(f"~ {_printable(path)} ({', '.join(what)})")


def _printable(path: str) -> str:
    return path.encode(errors="surrogateescape").decode(errors="backslashreplace")


def cmd_outdated(args: _CliArgs) -> None:
    import json

    from tmpl2deb.outdated import outdated, outdated_rootfs
    from tmpl2deb.template import open_template

    deb: Path | None = vars(args)["deb"]  # optional here only
    if args.rootfs_dir is not None:
        if deb is not None or args.sources:
            raise UsageError("give either a template (with --source) or --rootfs, not both")
        newer = outdated_rootfs(args.rootfs_dir)
        what, total = str(args.rootfs_dir), None
    else:
        if deb is None:
            raise UsageError("give a template .deb or staging root, or --rootfs DIR")
        template = open_template(deb, args.package)
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


def cmd_publish(args: _CliArgs) -> None:
    from tmpl2deb.repo import publish

    for meta in publish(
        args.repo,
        args.debs,
        codename=args.codename,
        component=args.component,
        sign_with=args.sign_with,
        force=args.force,
        retain=args.retain,
        lock_timeout=args.lock_timeout,
    ):
        print(f"{meta.package} {meta.version} {meta.architecture}")


def cmd_remove(args: _CliArgs) -> None:
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


def cmd_list(args: _CliArgs) -> None:
    from tmpl2deb.repo import check_repo, list_templates

    check_repo(args.repo)
    if args.check:
        from tmpl2deb.repo import verify

        log.info("%s: indices and %d templates match their digests", args.repo, verify(args.repo))
    entries = list_templates(args.repo, args.codename)
    if args.json:
        import json

        rows = [
            {"codename": e.codename, "component": e.component, "size": e.size,
             "filename": e.filename, **json.loads(e.metadata.to_json())}
            for e in entries
        ]  # fmt: skip
        print(json.dumps(rows, indent=2, sort_keys=True))
        return
    table = [("PACKAGE", "VERSION", "ARCH", "SUITE", "SIZE", "IMAGE", "BUILD DATE", "PARENT")]
    table += [
        (
            e.package,
            e.version,
            e.architecture,
            f"{e.codename}/{e.component}",
            _size(e.size),
            e.metadata.image,
            e.metadata.build_date,
            e.metadata.parent or "-",
        )
        for e in entries
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size:.1f} GiB"


def _expect(args: _CliArgs, architecture: str = "") -> Expect:
    """The template checks (_add_checks) as given on the command line."""
    from tmpl2deb.stage import Expect

    return Expect(
        architecture=architecture,
        distro=args.distro,
        suite=args.suite,
        signature=args.expect_signature,
        allow_mismatch=args.allow_mismatch,
    )


def cmd_stage(args: _CliArgs) -> None:
    from tmpl2deb.stage import stage

    template = stage(
        args.apt_source, args.spec, args.staging, architecture=args.arch, expect=_expect(args)
    )
    meta = template.metadata
    log.info("Staged %s %s (%s) in %s", meta.package, meta.version, meta.architecture, args.staging)
    print(args.staging)


def cmd_resolve(args: _CliArgs) -> None:
    from tmpl2deb.resolve import resolve

    print(resolve(args.apt_source, args.spec, args.arch).line())


def cmd_initrd(args: _CliArgs) -> None:
    from tmpl2deb import initrd

    context = dict(_key_value(item) for item in args.context)
    path = args.rootfs / initrd.RECORD
    if args.action == "record":
        initrd.write_record(path, initrd.record(args.rootfs, context))
        print(path)
        return
    old = initrd.read_record(path)
    for change in initrd.changes(args.rootfs, context, old) if old else [f"no record {path}"]:
        print(change)


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise Tmpl2debError(f"--context {item!r}: expected KEY=VALUE")
    return key, value


def cmd_derive(args: _CliArgs) -> None:
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
            delta_package=args.package,
            with_parents=tuple(args.with_parent),
        )
    elif args.version or args.feature or args.signature or args.delta:
        raise Tmpl2debError("--version, --feature, --signature and --delta need --template-name")
    options = DeriveOptions(
        sources=tuple(args.sources),
        install=tuple(args.install),
        purge=tuple(args.purge),
        package=args.package,
        expect=_expect(args, args.arch),
        template=template,
        with_parents=tuple(args.with_parent),
    )
    result = derive(args.template, args.dest, options)
    print(result.deb or result.rootfs)


def _common(parser: argparse.ArgumentParser, top: bool = False) -> None:
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
    _add_with_parent(delta)
    _add_deb_output(p, "zstd compression level", "the .deb", "Maintainer field")
    p.set_defaults(func=cmd_pack)


def _add_with_parent(group: argparse._ActionsContainer) -> None:
    group.add_argument(
        "--with-parent",
        action="append",
        default=[],
        type=Path,
        metavar="DEB",
        help="parent template .deb of a delta template (repeatable; default: look for "
        "PACKAGE_VERSION_ARCH.deb next to the child, or in its staging root)",
    )


def _add_deb_output(
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


def _add_info(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _sub(
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
    _add_staging_package(p)
    _add_with_parent(p)
    p.set_defaults(func=cmd_info)


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
    _add_staging_package(p)
    _add_with_parent(p)
    p.set_defaults(func=cmd_unpack)


def _add_staging_package(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--package",
        default="",
        help="template package in STAGING (default: the one no other is a delta of)",
    )


def _add_diff(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _sub(
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
    _add_with_parent(p)
    p.set_defaults(func=cmd_diff)


def _add_outdated(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _sub(
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
    _add_staging_package(p)
    p.add_argument("--json", action="store_true", help="print JSON (default: one line each)")
    p.set_defaults(func=cmd_outdated)


def _add_lock_timeout(p: argparse.ArgumentParser) -> None:
    from tmpl2deb.lock import DEFAULT_TIMEOUT

    p.add_argument(
        "--lock-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for another writer of the repository to finish "
        f"(default: {DEFAULT_TIMEOUT:.0f})",
    )


def _add_publish(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _sub(
        subparsers,
        "publish",
        "Add template .debs to a repository laid out like Isar's base-apt (created if needed).",
        "tmpl2deb publish --repo /srv/templates --sign-with 0x1234ABCD tmpl-base_1.0_amd64.deb",
    )
    p.add_argument("debs", type=Path, nargs="+", metavar="DEB", help="template .deb files")
    p.add_argument("--repo", type=Path, required=True, metavar="DIR", help="repository directory")
    p.add_argument(
        "--codename",
        default="",
        help="distribution to publish into (default: the suite the templates record)",
    )
    p.add_argument("--component", default="main", help="component (default: main)")
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
    _add_lock_timeout(p)
    p.set_defaults(func=cmd_publish)


def _add_remove(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _sub(
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
    _add_lock_timeout(p)
    p.set_defaults(func=cmd_remove)


def _add_list(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _sub(
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
    p.set_defaults(func=cmd_list)


def _add_stage(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _sub(
        subparsers,
        "stage",
        "Download a template (and the parents a delta needs) with apt-get into a staging "
        "root (never the host): apt checks it against the signed index, nothing of it runs.",
        "tmpl2deb stage --source 'deb [signed-by=/srv/templates/archive-keyring.gpg] "
        "http://repo.example.org/templates bookworm main' tmpl-base staging/",
    )
    _add_source_spec(p)
    _add_checks(p)
    p.add_argument(
        "staging",
        type=Path,
        metavar="STAGING",
        help="staging root with its own apt state (created if needed); the .debs are left in "
        "STAGING/var/cache/apt/archives for unpack",
    )
    p.set_defaults(func=cmd_stage)


def _add_resolve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _sub(
        subparsers,
        "resolve",
        "Print which template an apt source holds for a spec: PACKAGE VERSION DEB_SHA256 "
        "ROOTFS_SHA256, read from the source's signed index (nothing installed, no root).",
        "tmpl2deb resolve --source 'deb [signed-by=/srv/templates/archive-keyring.gpg] "
        "http://repo.example.org/templates bookworm main' 'tmpl-base (>= 1.0)'",
    )
    _add_source_spec(p)
    p.set_defaults(func=cmd_resolve)


def _add_initrd(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _sub(
        subparsers,
        "initrd",
        "Record what the initrds in a rootfs' /boot were made from (record), or print what of "
        "it changed since, one input per line, nothing when the initrd can be reused (check).",
        "tmpl2deb initrd check /srv/rootfs --context 'cmdline=update-initramfs -u -k all'",
    )
    p.add_argument("action", choices=("record", "check"), help="record, or check against it")
    p.add_argument(
        "rootfs", type=Path, metavar="ROOTFS", help="the root filesystem (record: var/lib/tmpl2deb)"
    )
    p.add_argument(
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="what else decides the initrd, e.g. the generator's command line (repeatable; "
        "default: none)",
    )
    p.set_defaults(func=cmd_initrd)


def _add_source_spec(p: argparse.ArgumentParser) -> None:
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


def _add_checks(p: argparse.ArgumentParser, arch_help: str = "") -> None:
    """The checks stage and derive make on a template (stage has its own --arch)."""
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


def _add_derive(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _sub(
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
    _add_staging_package(p)
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
    _add_checks(p, "the architecture the build needs (default: any)")
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
    _add_with_parent(out)
    _add_deb_output(out, "zstd level", "its .deb", "its Maintainer field")
    p.set_defaults(func=cmd_derive)


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
    _common(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_pack,
        _add_info,
        _add_unpack,
        _add_publish,
        _add_remove,
        _add_list,
        _add_stage,
        _add_resolve,
        _add_initrd,
        _add_derive,
        _add_diff,
        _add_outdated,
    ):
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


def _setup_logging(args: _CliArgs) -> _Handler:
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

    args = build_parser().parse_args(argv, namespace=_CliArgs())
    handler = _setup_logging(args)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code: int | None = args.func(args)
    except UsageError as err:
        log.error("%s", err, exc_info=args.debug)
        return 2
    except Tmpl2debError as err:
        log.error("%s", err, exc_info=args.debug)
        return 1
    except KeyboardInterrupt as err:
        terminated = isinstance(err, _Terminated)
        log.error("terminated" if terminated else "interrupted")
        return 143 if terminated else 130
    except BrokenPipeError:
        return 1  # stdout closed by the reader (e.g. | head); nothing more to say
    finally:
        handler.finish()
        signal.signal(signal.SIGTERM, previous)
    return code or 0
