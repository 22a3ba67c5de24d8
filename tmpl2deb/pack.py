"""pack: a root filesystem (directory or tarball) becomes a template .deb, streamed in one pass."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from tmpl2deb import debformat, rootfs
from tmpl2deb.errors import (
    CommandError,
    FormatError,
    HostError,
    InputError,
    MetadataError,
    UsageError,
    disk_full,
    os_error,
)
from tmpl2deb.excludes import (
    DEFAULT_EXCLUDES,
    ExcludeRules,
)
from tmpl2deb.lock import claim, remove_abandoned
from tmpl2deb.metadata import (
    DEFAULT_MAINTAINER,
    DELTA,
    FULL,
    PackageInfo,
    TemplateMetadata,
    check_package,
    check_version,
    deb_filename,
    package_name,
    render_control,
    rootfs_identity,
)
from tmpl2deb.payload import PayloadOptions, delta_payload, full_payload
from tmpl2deb.run import host_architecture
from tmpl2deb.tarstream import Filtered
from tmpl2deb.template import Template, open_template, resolve_chain

log = logging.getLogger(__name__)

DEFAULT_LEVEL = 3
_PLACEHOLDER_SHA = "0" * 64


@dataclass(frozen=True, kw_only=True, slots=True)
class PackOptions:
    """What the user asked pack to do; mtime is the resolved SOURCE_DATE_EPOCH."""

    name: str
    mtime: int
    output: Path
    version: str = ""
    architecture: str = ""
    package: str = ""
    features: tuple[str, ...] = ()
    parent: str = ""
    parent_sha256: str = ""
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    signature: str = ""
    excludes: ExcludeRules = field(default_factory=lambda: ExcludeRules(DEFAULT_EXCLUDES))
    level: int = DEFAULT_LEVEL
    maintainer: str = DEFAULT_MAINTAINER
    delta_from: Path | None = None  # parent template (.deb or staging root) to delta against
    delta_package: str = ""  # which template of a staging root delta_from is
    with_parents: tuple[Path, ...] = ()  # .debs of delta_from's own parents, if it is a delta

    def __post_init__(self) -> None:
        if not 1 <= self.level <= 19:
            raise MetadataError("level", f"{self.level} is not a zstd level from 1 to 19")
        if self.version:
            check_version(self.version)
        if self.package:
            check_package(self.package)


def default_version(mtime: int) -> str:
    """A version that grows with the build date: 0+YYYYMMDD.HHMMSS."""
    return time.strftime("0+%Y%m%d.%H%M%S", time.gmtime(mtime))


def build_date(mtime: int) -> str:
    """The build date as ISO 8601 UTC."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))


def pack(source: Path, options: PackOptions) -> Path:
    """Pack SOURCE into a template .deb in options.output and return its path."""
    rootfs.check_tree(source)
    _check_owner(source)
    if not options.output.is_dir():
        raise InputError(f"output directory {options.output} does not exist; create it first")
    package = options.package or package_name(options.name)
    chain = _delta_chain(options)
    if chain:
        options = _with_parent(options, chain[0])
    draft = _draft_metadata(options, package, DELTA if chain else FULL)
    space = len(debformat.control_tar(render_control(draft, _PLACEHOLDER_INFO), options.mtime))
    space = max(space, 10240)  # at least one tar record, as tar itself writes
    log.info("Packing %s into a template for image %s", source, options.name)
    try:
        return _write(source, options, package, chain, draft, space)
    except (OSError, CommandError, HostError, FormatError) as err:
        if disk_full(err):
            raise HostError(
                f"cannot write the template into {options.output}: the disk is full (no space "
                "left on device); nothing was left there"
            ) from err
        raise


def _write(
    source: Path,
    options: PackOptions,
    package: str,
    chain: list[Template],
    draft: TemplateMetadata,
    space: int,
) -> Path:
    with _output_file(options.output) as (out, tmp_path):
        writer_ = debformat.DebWriter(out, package, options.mtime, space)
        docs = _doc_files(draft, options)
        writer_.begin_payload(docs)
        payload_digest = hashlib.sha256()

        def write_payload(data: memoryview) -> None:
            payload_digest.update(data)  # the compressed bytes only: a third of the tar's
            writer_.write_payload(data)

        how = PayloadOptions(options.excludes, options.level, options.mtime, options.output)
        if chain:
            stream, kind = delta_payload(source, how, chain, write_payload)
        else:
            stream, kind = full_payload(source, how, write_payload), FULL
        payload_size = writer_.end_payload()
        payload_sha256 = payload_digest.hexdigest()
        draft = replace(
            draft,
            payload=kind,
            payload_sha256=payload_sha256,
            rootfs_sha256=rootfs_identity(
                payload_sha256, draft.parent_sha256 if kind == DELTA else ""
            ),
        )
        meta, manifest = _finish_metadata(draft, stream, options)
        writer_.add_file(debformat.MANIFEST, manifest)
        writer_.add_file(debformat.METADATA, meta.to_json().encode())
        sizes = (len(manifest), len(meta.to_json()), *map(len, docs.values()))
        installed = _installed_size(payload_size, *sizes)
        info = PackageInfo(maintainer=options.maintainer, installed_size=installed)
        name = debformat.DELTA_PAYLOAD if meta.delta else debformat.PAYLOAD
        writer_.finish(render_control(meta, info), payload_size, name)
        target = options.output / deb_filename(meta.package, meta.version, meta.architecture)
        tmp_path.rename(target)
    ratio = payload_size / max(stream.size, 1)
    log.info(
        "Wrote %s: %d files, rootfs tar %.1f MiB, %s payload %.1f MiB (%.1f %%)",
        target,
        stream.members,
        stream.size / 2**20,
        meta.payload,
        payload_size / 2**20,
        100 * ratio,
    )
    return target


def _check_owner(source: Path) -> None:
    """A root filesystem belongs to root; one that does not was most likely copied or chowned
    by a user, and would carry that user's ids into every image (packed as is, warned)."""
    if not source.is_dir():
        return
    for name in ("usr", "etc", ""):
        try:
            info = os.lstat(source / name)
        except OSError:
            continue
        if info.st_uid != 0:
            log.warning(
                "%s is owned by uid %d, not root: the template records these owners as they "
                "are (was the tree copied or chowned without sudo?)",
                source / name,
                info.st_uid,
            )
        return


_PLACEHOLDER_INFO = PackageInfo(maintainer=DEFAULT_MAINTAINER, installed_size=10**12)


def _draft_metadata(options: PackOptions, package: str, payload: str) -> TemplateMetadata:
    """The metadata with every field not yet known at its widest, to reserve control space."""
    return TemplateMetadata(
        payload=payload,
        package=package,
        version=options.version or default_version(options.mtime),
        architecture=options.architecture or "x" * 32,
        image=options.name,
        build_date=build_date(options.mtime),
        distro="x" * 64,
        suite="x" * 64,
        rootfs_sha256=rootfs_identity(
            _PLACEHOLDER_SHA, options.parent_sha256 if payload == DELTA else ""
        ),
        payload_sha256=_PLACEHOLDER_SHA,
        rootfs_size=10**15,
        rootfs_files=10**12,
        packages=10**9,
        manifest_sha256=_PLACEHOLDER_SHA,
        features=options.features,
        excludes=options.excludes.patterns,
        parent=options.parent,
        parent_sha256=options.parent_sha256,
        added=options.added,
        removed=options.removed,
        signature=options.signature,
    )


def _delta_chain(options: PackOptions) -> list[Template]:
    """The parent template to delta against and its own parents (empty: a full template)."""
    if options.delta_from is None:
        return []
    return resolve_chain(
        open_template(options.delta_from, options.delta_package), options.with_parents
    )


def _with_parent(options: PackOptions, parent: Template) -> PackOptions:
    """The options with the delta parent as the recorded parent (which it must agree with)."""
    meta = parent.metadata
    field_ = f"{meta.package} (= {meta.version})"
    if options.parent and options.parent != field_:
        raise UsageError(
            f"--parent {options.parent} is not the template the delta is made against ({field_})"
        )
    if options.parent_sha256 and options.parent_sha256 != meta.rootfs_sha256:
        raise UsageError(
            f"--parent-sha256 is not the rootfs sha256 of {parent.name} ({meta.rootfs_sha256})"
        )
    if options.architecture and options.architecture != meta.architecture:
        raise UsageError(
            f"a delta against {parent.name} ({meta.architecture}) cannot be {options.architecture}"
        )
    return replace(options, parent=field_, parent_sha256=meta.rootfs_sha256)


def _installed_size(payload: int, *small: int) -> int:
    """Installed-Size in KiB the way dpkg-gencontrol counts: per file rounded up, 1 per dir."""
    dirs = 9  # ./ usr share doc doc/PACKAGE tmpl2deb templates templates/PACKAGE, rounded up
    return sum(-(-size // 1024) for size in (payload, *small)) + dirs


def _doc_files(draft: TemplateMetadata, options: PackOptions) -> dict[str, bytes]:
    """copyright and changelog.gz, as every Debian package carries them."""
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(options.mtime))
    changelog = (
        f"{draft.package} ({draft.version}) unstable; urgency=medium\n\n"
        f"  * Image template {draft.image}, packed by tmpl2deb.\n\n"
        f" -- {options.maintainer}  {date}\n"
    )
    copyright_ = (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        f"Comment: This package holds the root filesystem of the image {draft.image}.\n"
        " Each Debian package in that root filesystem carries its own copyright\n"
        " file under /usr/share/doc; see the template's manifest for the list.\n"
    )
    return {
        "changelog.gz": gzip.compress(changelog.encode(), compresslevel=9, mtime=0),
        "copyright": copyright_.encode(),
    }


@contextmanager
def _output_file(output: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A temporary file in the output directory, removed unless the caller renamed it (and,
    after a SIGKILL, by the next pack into the same directory)."""
    remove_abandoned(output, ".tmpl2deb-*.deb.part")
    remove_abandoned(output, ".tmpl2deb-delta-*")
    try:
        fd, name = tempfile.mkstemp(dir=output, prefix=".tmpl2deb-", suffix=".deb.part")
        claim(fd)
    except OSError as err:
        raise os_error(err, f"cannot write to {output}") from err
    path = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a .deb is world-readable
        with os.fdopen(fd, "w+b") as out:
            yield out, path
    finally:
        path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _finish_metadata(
    draft: TemplateMetadata, stream: Filtered, options: PackOptions
) -> tuple[TemplateMetadata, bytes]:
    """Fill the draft with what the stream revealed: digest, counts, distro, manifest."""
    status = stream.captured.get(rootfs.DPKG_STATUS, b"")
    packages = rootfs.installed_packages(status)
    manifest = rootfs.render_manifest(packages)
    os_release = _os_release(stream)
    architecture = options.architecture or _dpkg_architecture(packages)
    meta = replace(
        draft,
        architecture=architecture,
        distro=os_release.get("ID", "unknown"),
        suite=os_release.get("VERSION_CODENAME") or os_release.get("VERSION_ID") or "unknown",
        rootfs_size=stream.size,
        rootfs_files=stream.members,
        packages=len(packages),
        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
    )
    if not packages:
        log.warning("the rootfs has no dpkg status: the template's manifest is empty")
    return meta, manifest


def _os_release(stream: Filtered) -> dict[str, str]:
    for name in rootfs.OS_RELEASE:
        if name in stream.captured:
            return rootfs.parse_os_release(stream.captured[name].decode(errors="replace"))
    log.warning("the rootfs has no /etc/os-release: distro and suite are 'unknown'")
    return {}


def _dpkg_architecture(packages: list[tuple[str, str, str]]) -> str:
    """The rootfs' native architecture (that of its dpkg), else the host's."""
    for name, _version, arch in packages:
        if name == "dpkg":
            return arch
    host = host_architecture()
    log.info("no dpkg in the rootfs: using the host architecture %s", host)
    return host
