"""derive: a template plus packages installed on top (and packages purged) gives a new rootfs,
and optionally the next template -- the steps the Isar class takes, without bitbake."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from tmpl2deb import rootfs
from tmpl2deb.errors import InputError, PrivilegeError, Tmpl2debError, UsageError
from tmpl2deb.metadata import check_package
from tmpl2deb.pack import PackOptions, pack
from tmpl2deb.run import run, show_progress
from tmpl2deb.stage import Source
from tmpl2deb.template import Expect, check_match
from tmpl2deb.unpack import Template, check_dest, open_template, unpack

log = logging.getLogger(__name__)

BUILD_SOURCES = Path("etc/apt/sources.list.d/tmpl2deb-build.list")
BUILD_KEYS = Path("etc/apt/tmpl2deb-build-keys")
BUILD_APT_CONF = Path("etc/apt/apt.conf.d/90tmpl2deb-build")
POLICY_RC_D = Path("usr/sbin/policy-rc.d")
RESOLV_CONF = Path("etc/resolv.conf")
SAVED_SUFFIX = ".tmpl2deb-saved"

# Runs as the only process of a private mount namespace: the mounts vanish with it, on
# success, on failure and on SIGKILL alike, and the host never sees them.
_CHROOT_SCRIPT = """\
root=$1; shift
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
exec chroot "$root" "$@"
"""

_CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "DEBIAN_FRONTEND": "noninteractive",
    "DEBCONF_NONINTERACTIVE_SEEN": "true",
    "TMPDIR": "/tmp",
}

_POLICY_RC_D = b"#!/bin/sh\n# tmpl2deb derive: no daemons start during the build\nexit 101\n"

_BUILD_APT_CONF = """\
// Written by tmpl2deb derive for the build only; removed before the rootfs is finished.
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
Dpkg::Options { "--force-confdef"; "--force-confold"; };
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class DeriveOptions:
    """What to build on top of the template, and what the template must be."""

    sources: tuple[str, ...] = ()
    install: tuple[str, ...] = ()
    purge: tuple[str, ...] = ()
    package: str = ""
    expect: Expect = field(default_factory=Expect)
    template: PackOptions | None = None
    with_parents: tuple[Path, ...] = ()  # .debs of the template's parents, if it is a delta


@dataclass(frozen=True, slots=True)
class Result:
    rootfs: Path
    deb: Path | None
    added: tuple[str, ...]
    removed: tuple[str, ...]


def in_chroot(root: Path, *argv: str, show: bool = False) -> str:
    """Run argv chrooted into ROOT with /proc, /sys and /dev mounted for it; its output
    (with show: none, it went to stderr, apt's own progress)."""
    out = (
        run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-ec",
                _CHROOT_SCRIPT,
                "sh",
                root,
                *argv,
            ],
            env=_CHROOT_ENV,
            capture=not show,
            show=show,
        ).stdout
        or ""
    )
    log.debug("%s", out.rstrip())
    return out


def derive(source: Path, dest: Path, options: DeriveOptions) -> Result:
    """Unpack the template at SOURCE into DEST, install and purge on top, clean up, and
    optionally pack the result into the next template."""
    if os.geteuid() != 0:
        raise PrivilegeError("derive needs root to unpack the template and chroot into it")
    for name in (*options.install, *options.purge):
        check_package(name.partition("=")[0].partition(":")[0])
    both = set(options.install) & set(options.purge)
    if both:
        raise UsageError(f"packages both to install and to purge: {' '.join(sorted(both))}")
    sources = [source for text in options.sources for source in Source.parse_all(text)]
    if options.install and not sources:
        raise UsageError("installing packages needs apt sources: give --source")
    template = open_template(source, options.package)
    check_match(template.metadata, options.expect)
    check_dest(dest)
    if options.template and not options.template.output.is_dir():
        raise InputError(f"output directory {options.template.output} does not exist")
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmpl2deb-"))
    try:
        unpack(template.source, work, template.metadata.package, options.with_parents)
        before = _packages(work)
        if options.install or options.purge:
            with _build_files(work, sources):
                _apt_steps(work, options, before)
        after = _packages(work)
        if dest.exists():
            dest.rmdir()
        work.rename(dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    added = tuple(sorted(after - before))
    removed = tuple(sorted(before - after))
    log.info("Derived %s: %d packages added, %d removed", dest, len(added), len(removed))
    deb = None
    if options.template:
        deb = _next_template(dest, template, options.template, added, removed)
    return Result(dest, deb, added, removed)


def _packages(root: Path) -> set[str]:
    """Names of the packages dpkg has installed in ROOT."""
    try:
        status = (root / rootfs.DPKG_STATUS.decode()).read_bytes()
    except FileNotFoundError:
        return set()
    return {name for name, _version, _arch in rootfs.installed_packages(status)}


def _apt_steps(root: Path, options: DeriveOptions, installed: set[str]) -> None:
    missing = [p for p in options.purge if p.partition(":")[0] not in installed]
    if missing:
        raise InputError(f"cannot purge packages that are not installed: {' '.join(missing)}")
    # apt's own progress passes through (a live line on a terminal) unless --quiet
    show = show_progress()
    quiet = [] if show else ["-q"]
    log.info("Updating the package lists in the rootfs")
    in_chroot(root, "apt-get", "update", "--error-on=any", *quiet, show=show)
    if options.install:
        log.info("Installing %s", " ".join(options.install))
        in_chroot(root, "apt-get", "install", "--yes", *quiet, *options.install, show=show)
    if options.purge:
        log.info("Purging %s", " ".join(options.purge))
        purge = ["apt-get", "purge", "--yes", *quiet, "--autoremove", *options.purge]
        in_chroot(root, *purge, show=show)
    in_chroot(root, "apt-get", "clean", "-q")


class _BuildFiles:
    """Files a build needs in the rootfs and the finished rootfs must not keep; what they
    replace is saved next to them and put back."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.placed: list[Path] = []
        self.saved: list[Path] = []

    def place(self, rel: Path, data: bytes, mode: int = 0o644) -> None:
        path = self.root / rel
        if os.path.lexists(path):
            path.rename(path.with_name(path.name + SAVED_SUFFIX))
            self.saved.append(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
        self.placed.append(path)

    def remove(self) -> None:
        for path in reversed(self.placed):
            path.unlink(missing_ok=True)
        for path in self.saved:
            path.with_name(path.name + SAVED_SUFFIX).rename(path)
        keys = self.root / BUILD_KEYS
        if keys.is_dir() and not any(keys.iterdir()):
            keys.rmdir()


@contextmanager
def _build_files(root: Path, sources: Sequence[Source]) -> Iterator[None]:
    """Put the build-only files into the rootfs (sources, keys, resolv.conf, policy-rc.d,
    apt settings) and take them out again afterwards."""
    files = _BuildFiles(root)
    try:
        lines = []
        for number, src in enumerate(sources):
            key = _host_key(root, src.options.get("signed-by", ""), number)
            if key is not None:
                files.place(key[0], key[1])
                src = src.with_options(**{"signed-by": "/" + os.fspath(key[0])})
            lines.append(src.line)
        files.place(BUILD_SOURCES, "".join(f"{line}\n" for line in lines).encode())
        files.place(BUILD_APT_CONF, _BUILD_APT_CONF.encode())
        if not os.path.lexists(root / POLICY_RC_D):
            files.place(POLICY_RC_D, _POLICY_RC_D, 0o755)
        resolv = Path("/etc/resolv.conf")
        if resolv.is_file():
            files.place(RESOLV_CONF, resolv.read_bytes())
        for name in ("proc", "sys", "dev"):
            (root / name).mkdir(mode=0o755, exist_ok=True)
        yield
    finally:
        files.remove()
        _clean_apt_state(root)


def _host_key(root: Path, signed_by: str, number: int) -> tuple[Path, bytes] | None:
    """A signed-by key of the build host, to copy into the rootfs for the build."""
    if not signed_by.startswith("/"):
        return None  # a fingerprint, or no signed-by at all
    key = Path(signed_by)
    if key.is_file():
        suffix = key.suffix if key.suffix in (".asc", ".gpg") else ".gpg"
        return BUILD_KEYS / f"source-{number}{suffix}", key.read_bytes()
    if (root / key.relative_to("/")).is_file():
        return None  # the rootfs has it itself
    raise InputError(f"signed-by key {key} does not exist")


def _clean_apt_state(root: Path) -> None:
    """What apt-get update and install leave behind and a template must not carry."""
    lists = root / "var/lib/apt/lists"
    if lists.is_dir():
        for entry in lists.iterdir():
            if entry.is_file() and entry.name != "lock":
                entry.unlink()
    for name in ("pkgcache.bin", "srcpkgcache.bin"):
        (root / "var/cache/apt" / name).unlink(missing_ok=True)


def _next_template(
    dest: Path,
    parent: Template,
    options: PackOptions,
    added: tuple[str, ...],
    removed: tuple[str, ...],
) -> Path:
    meta = parent.metadata
    options = replace(
        options,
        parent=f"{meta.package} (= {meta.version})",
        parent_sha256=meta.rootfs_sha256,
        added=added,
        removed=removed,
    )
    try:
        return pack(dest, options)
    except Tmpl2debError as err:
        raise Tmpl2debError(f"{err} (the derived rootfs is kept in {dest})") from err
