"""outdated: which packages of a template apt sources have newer versions of, by apt's own
upgrade simulation against the template's manifest (no rootfs unpacked, no root needed), or
which packages of a rootfs its own apt sources have newer versions of (the package lists it
has, no update: what an image built in it would see)."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tmpl2deb.errors import InputError, UsageError
from tmpl2deb.rootfs import parse_manifest
from tmpl2deb.run import host_architecture, run
from tmpl2deb.stage import SOURCES, Source, apt, prepare
from tmpl2deb.template import Template

log = logging.getLogger(__name__)

# apt-get --simulate: "Inst libc6 [2.36-9+deb12u7] (2.36-9+deb12u9 Debian:12.9/stable [amd64])"
_UPGRADE = re.compile(
    r"^Inst (?P<name>\S+) \[(?P<old>[^\]]+)\] \((?P<new>\S+) .*?\[(?P<arch>[^\]]+)\]"
)


@dataclass(frozen=True, slots=True)
class Newer:
    name: str
    architecture: str
    version: str  # in the template
    candidate: str  # in the sources


def outdated(template: Template, sources: Sequence[str]) -> list[Newer]:
    """The template's packages that `apt-get dist-upgrade` would upgrade from SOURCES."""
    lines = [source for text in sources for source in Source.parse_all(text)]
    if not lines:
        raise UsageError("give the apt sources to compare with (--source)")
    native = template.metadata.architecture
    packages = parse_manifest(template.manifest)
    with tempfile.TemporaryDirectory(prefix="tmpl2deb-outdated-") as tmp:
        root = Path(tmp)
        prepare(root, native)
        for arch in sorted({a for _, _, a in packages} - {native, "all", host_architecture()}):
            run(["dpkg", f"--root={root}", "--add-architecture", arch])
        (root / SOURCES).write_text("".join(source.line + "\n" for source in lines))
        (root / "var/lib/dpkg/status").write_text(_status(packages))
        log.info("Updating the package lists from %s", ", ".join(s.uri for s in lines))
        apt(root, "apt-get", "update", "--error-on=any", "-q")
        plan = apt(root, "apt-get", "dist-upgrade", "--simulate", "-q", "-o", "Debug::NoLocking=1")
    return _upgrades(plan)


def outdated_rootfs(root: Path) -> list[Newer]:
    """The packages of the rootfs at ROOT that `apt-get dist-upgrade` in it would upgrade from
    its own sources and package lists (chroot: its own configuration and architecture). It
    writes nothing there (no cache, no lock), so it may run while apt installs in it."""
    if not (root / "var/lib/dpkg/status").is_file():
        raise InputError(f"{root} is not a root filesystem (no var/lib/dpkg/status)")
    plan = run(
        ["chroot", os.fspath(root), "apt-get", "dist-upgrade", "--simulate", "-q",
         "-o", "Debug::NoLocking=1", "-o", "Dir::Log::Planner=/dev/null",
         "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="],
        capture=True,
    ).stdout  # fmt: skip
    return _upgrades(plan)


def _upgrades(plan: str) -> list[Newer]:
    newer = []
    for line in plan.splitlines():
        match = _UPGRADE.match(line)
        # the manifest has no dependency fields, so apt sees each record as another build of
        # the same version and plans a reinstall: only a version change counts
        if match and match["old"] != match["new"]:
            name = match["name"].partition(":")[0]
            newer.append(Newer(name, match["arch"], match["old"], match["new"]))
    return sorted(newer, key=lambda n: (n.name, n.architecture))


def _status(packages: list[tuple[str, str, str]]) -> str:
    """A dpkg status with the template's packages installed; a name installed for several
    architectures is Multi-Arch: same, as it must have been."""
    count: dict[str, int] = {}
    for name, _, _ in packages:
        count[name] = count.get(name, 0) + 1
    return "".join(
        f"Package: {name}\nStatus: install ok installed\nVersion: {version}\n"
        f"Architecture: {arch}\n" + ("Multi-Arch: same\n" if count[name] > 1 else "") + "\n"
        for name, version, arch in packages
    )
