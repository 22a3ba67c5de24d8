"""How results are shown: the info table, the listings of packages and files, the diff and the
repository table; text by default, JSON where asked. stdout carries only these."""

from __future__ import annotations

import json
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tmpl2deb.errors import Tmpl2debError

if TYPE_CHECKING:
    from tmpl2deb.diff import Diff
    from tmpl2deb.repo import Entry
    from tmpl2deb.template import Template


def printable(path: str) -> str:
    """A name that is not UTF-8 with backslash escapes, as tar -tv shows it."""
    return path.encode(errors="surrogateescape").decode(errors="backslashreplace")


def size_text(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{size} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def payload_kind(template: Template) -> str:
    return "tar delta, zstd" if template.metadata.delta else "zstd"


def table(rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def info(template: Template, with_parents: Sequence[Path]) -> None:
    """The metadata as a two-column table, and the chain down to the full template."""
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
            f"{template.payload.span.size} bytes ({payload_kind(template)})"
            + (f", sha256 {meta.payload_sha256}" if meta.payload_sha256 else ""),
        ),
        ("Manifest", f"sha256 {meta.manifest_sha256}"),
        ("Excludes", " ".join(meta.excludes) or "-"),
        ("Format", str(meta.format)),
    ]
    chain = chain_lines(template, with_parents)
    rows += [("Chain" if n == 0 else "", line) for n, line in enumerate(chain)]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}".rstrip())


def chain_lines(template: Template, with_parents: Sequence[Path]) -> list[str]:
    """One line per template from this one down to the full one at the bottom."""
    from tmpl2deb.template import resolve_chain

    try:
        chain, missing = resolve_chain(template, with_parents), ""
    except Tmpl2debError as err:
        chain, missing = [template], str(err)
    lines = [
        f"{t.metadata.package} {t.metadata.version} {t.metadata.payload} "
        f"{size_text(t.payload.span.size)}"
        for t in chain
    ]
    return lines + ([f"(incomplete: {missing})"] if missing else [])


def files(template: Template, with_parents: Sequence[Path], as_json: bool) -> None:
    """The rootfs listing, like tar -tv, read from the payload (deltas resolved), verified."""
    import dataclasses

    from tmpl2deb.diff import listing
    from tmpl2deb.template import resolve_chain

    entries = listing(resolve_chain(template, with_parents))
    if as_json:
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
        print(printable(f"{mode} {e.owner:>11} {size:>10} {when} {path}{link}"))


def packages(template: Template, as_json: bool) -> None:
    """The manifest: 'name version architecture' per line, or a JSON list."""
    rows = [line.split() for line in template.manifest.decode().splitlines() if line.strip()]
    if as_json:
        keys = ("package", "version", "architecture")
        print(json.dumps([dict(zip(keys, row, strict=True)) for row in rows], indent=2))
        return
    for row in rows:
        print(" ".join(row))


def metadata_json(template: Template) -> None:
    sys.stdout.write(template.metadata_json.decode())


def diff(old: str, new: str, result: Diff, with_files: bool, as_json: bool) -> None:
    """What changed from template OLD to NEW: a list like diff -u's header, or JSON."""
    if as_json:
        data: dict[str, object] = {
            "old": old,
            "new": new,
            "packages": {"added": result.packages_added, "removed": result.packages_removed,
                         "changed": result.packages_changed},
        }  # fmt: skip
        if with_files:
            data["files"] = {
                "added": result.files_added,
                "removed": result.files_removed,
                "changed": dict(result.files_changed),
            }
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    print(f"--- {old}")
    print(f"+++ {new}")
    print(
        f"packages: {len(result.packages_added)} added, {len(result.packages_removed)} "
        f"removed, {len(result.packages_changed)} changed"
    )
    for mark, lines in (("+", result.packages_added), ("-", result.packages_removed),
                        ("~", result.packages_changed)):  # fmt: skip
        for line in lines:
            print(f"{mark} {line}")
    if not with_files:
        return
    print(
        f"files: {len(result.files_added)} added, {len(result.files_removed)} removed, "
        f"{len(result.files_changed)} changed"
    )
    for path in result.files_added:
        print(f"+ {printable(path)}")
    for path in result.files_removed:
        print(f"- {printable(path)}")
    for path, what in result.files_changed:
        print(f"~ {printable(path)} ({', '.join(what)})")


def repository(entries: Sequence[Entry], as_json: bool) -> None:
    """The templates of a repository: a table, or JSON with all their metadata."""
    if as_json:
        rows = [
            {"codename": e.codename, "component": e.component, "size": e.size,
             "filename": e.filename, **json.loads(e.metadata.to_json())}
            for e in entries
        ]  # fmt: skip
        print(json.dumps(rows, indent=2, sort_keys=True))
        return
    cells = [("PACKAGE", "VERSION", "ARCH", "SUITE", "SIZE", "IMAGE", "BUILD DATE", "PARENT")]
    cells += [
        (e.package, e.version, e.architecture, f"{e.codename}/{e.component}", size_text(e.size),
         e.metadata.image, e.metadata.build_date, e.metadata.parent or "-")
        for e in entries
    ]  # fmt: skip
    table(cells)
